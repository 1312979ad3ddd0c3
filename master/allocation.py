"""Allocation: which partition of which computer takes an instance.

Owns the node filter (``--node key=value``: its keys, their parsing, the
decision whether a computer fits) as pure functions, and the one query that
picks a free partition inside the caller's write transaction. The unique
constraint on ``instances.partition_id`` is what finally guarantees that no
partition ever holds two instances; on PostgreSQL the candidate row is also
locked (``FOR UPDATE SKIP LOCKED``) so that concurrent requests take
different partitions instead of retrying.
"""

from sqlalchemy import exists, select

from .models import Computer, Instance, Partition, Supply

# key -> (description, parser). The parsed value is compared in computer_fits().
FILTER_KEYS = {
    "computer": "the computer's name",
    "min-ram-mb": "at least this much RAM (MB)",
    "min-cpus": "at least this many CPUs",
    "min-disk-gb": "at least this much disk (GB)",
    "arch": "machine architecture, e.g. x86_64",
    "distribution": "distribution, e.g. debian-12",
}
_INTEGER_KEYS = {"min-ram-mb", "min-cpus", "min-disk-gb"}


class FilterError(ValueError):
    pass


def parse_filter(raw):
    """Validate a node filter (dict of str -> str). Returns a normalized dict."""
    result = {}
    for key, value in (raw or {}).items():
        if key not in FILTER_KEYS:
            known = ", ".join(sorted(FILTER_KEYS))
            raise FilterError(f"unknown node filter {key!r}; known keys: {known}")
        value = str(value).strip()
        if key in _INTEGER_KEYS:
            try:
                number = int(value)
            except ValueError:
                raise FilterError(f"node filter {key}={value!r}: expected a whole number") from None
            if number < 0:
                raise FilterError(f"node filter {key}={value!r}: must not be negative")
            result[key] = number
        else:
            if not value:
                raise FilterError(f"node filter {key!r} is empty")
            result[key] = value
    return result


def computer_fits(computer, node_filter):
    """Pure: does ``computer`` (anything with the Computer attributes) match?"""
    checks = {
        "computer": lambda v: computer.name == v,
        "min-ram-mb": lambda v: computer.ram_mb >= v,
        "min-cpus": lambda v: computer.cpus >= v,
        "min-disk-gb": lambda v: computer.disk_gb >= v,
        "arch": lambda v: computer.arch == v,
        "distribution": lambda v: computer.distribution == v,
    }
    return all(checks[key](value) for key, value in node_filter.items())


def filter_clauses(node_filter):
    columns = {
        "computer": lambda v: Computer.name == v,
        "min-ram-mb": lambda v: Computer.ram_mb >= v,
        "min-cpus": lambda v: Computer.cpus >= v,
        "min-disk-gb": lambda v: Computer.disk_gb >= v,
        "arch": lambda v: Computer.arch == v,
        "distribution": lambda v: Computer.distribution == v,
    }
    return [columns[key](value) for key, value in node_filter.items()]


def find_free_partition(session, sr_url, node_filter, computer_id=None):
    """A free partition fitting the filter, or None.

    Computers that already have the software release are preferred (no build
    to wait for), then partitions in a stable order so that a node fills up
    predictably.
    """
    occupied = exists().where(Instance.partition_id == Partition.id)
    supplied = (select(Supply.id)
                .where(Supply.computer_id == Computer.id, Supply.url == sr_url,
                       Supply.requested == "available")
                .exists())
    query = (select(Partition)
             .join(Computer, Partition.computer_id == Computer.id)
             .where(~occupied, Computer.credential_hash.is_not(None),
                    *filter_clauses(node_filter))
             .order_by(supplied.desc(), Computer.id, Partition.id)
             .limit(1))
    if computer_id is not None:
        query = query.where(Computer.id == computer_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=Partition, skip_locked=True)
    return session.scalars(query).first()

"""Allocation: which partition of which computer takes an instance.

Owns the node filter (``--node key=value``: its keys and their parsing, pure;
the SQL clauses that apply it), the allocation scopes (whose instances a
computer takes: its owner decides), and, inside the caller's
write transaction, the choice of a free partition and its claim. A claim is a
compare-and-set (``UPDATE partitions SET instance_id = :i WHERE id = :p AND
instance_id IS NULL``): of two concurrent requests for one partition exactly
one wins, whatever the database and its isolation level; the loser picks
again. On PostgreSQL the candidate row is also locked (``FOR UPDATE SKIP
LOCKED``) so that concurrent requests take different partitions at once.
"""

from sqlalchemy import and_, bindparam, func, or_, select, update

from .limits import MAX_INT
from .models import Computer, ComputerFriend, GroupMember, NetworkComputer, Network, Partition, Supply

# Whose instances a computer takes; personal is the default of a new computer.
SCOPES = {
    "personal": "its owner's instances only",
    "friends": "its owner's and those of the members of the groups it names",
    "public": "anyone's instances",
    "closed": "no new instances (those it has stay)",
}

# key -> description. filter_clauses() turns a parsed filter into SQL.
FILTER_KEYS = {
    "computer": "the computer's name",
    "min-ram-mb": "at least this much RAM (MB)",
    "min-cpus": "at least this many CPUs",
    "min-disk-gb": "at least this much disk (GB)",
    "arch": "machine architecture, e.g. x86_64",
    "distribution": "distribution, e.g. debian-12",
    "network": "one of your networks (`slapnode network list`)",
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
            if not 0 <= number <= MAX_INT:
                raise FilterError(f"node filter {key}={value!r}: must be between 0 and {MAX_INT}")
            result[key] = number
        else:
            if not value or len(value) > 128:
                raise FilterError(f"node filter {key!r} must be 1-128 characters")
            result[key] = value
    return result


def filter_clauses(node_filter, requester_id=None):
    """SQL clauses on Computer for a parsed filter; ``network`` names one of the
    requester's networks."""
    columns = {
        "computer": lambda v: Computer.name == v,
        "min-ram-mb": lambda v: Computer.ram_mb >= v,
        "min-cpus": lambda v: Computer.cpus >= v,
        "min-disk-gb": lambda v: Computer.disk_gb >= v,
        "arch": lambda v: Computer.arch == v,
        "distribution": lambda v: Computer.distribution == v,
        "network": lambda v: Computer.id.in_(
            select(NetworkComputer.computer_id)
            .join(Network, Network.id == NetworkComputer.network_id)
            .where(Network.owner_id == requester_id, Network.name == v)),
    }
    return [columns[key](value) for key, value in node_filter.items()]


def _room_clause():
    """Computers that may run a new instance now: not frozen, paused or draining (the
    volunteer's policy, as the node reported it), and under their own instance cap."""
    used = (select(func.count(Partition.id)).where(Partition.computer_id == Computer.id,
                                                   Partition.instance_id.is_not(None))
            .correlate(Computer).scalar_subquery())
    return and_(Computer.accepting.is_(True),
                or_(Computer.max_instances.is_(None), used < Computer.max_instances))


ROOM = _room_clause()


def _scope_clause():
    requester = bindparam("requester")
    friends = (select(ComputerFriend.computer_id)
               .join(GroupMember, GroupMember.group_id == ComputerFriend.group_id)
               .where(GroupMember.user_id == requester))
    return and_(Computer.allocation_scope != "closed",
                or_(Computer.owner_id == requester, Computer.allocation_scope == "public",
                    and_(Computer.allocation_scope == "friends", Computer.id.in_(friends))))


SCOPE = _scope_clause()
"""SQL: the computers that take a new instance of the requester, whose id is given when
the statement runs (``{"requester": id}``): built once, as allocation is the hot path."""


def refusal(session, computer, requester_id):
    """Why ``computer`` takes no new instance of ``requester_id`` (one line), or None."""
    if computer.allocation_scope == "closed":
        return f"computer {computer.name!r} is closed to new instances (its owner closed it)"
    if computer.owner_id == requester_id or computer.allocation_scope == "public":
        return None
    if computer.allocation_scope == "friends":
        allowed = session.scalars(select(ComputerFriend.computer_id).join(
            GroupMember, GroupMember.group_id == ComputerFriend.group_id).where(
            ComputerFriend.computer_id == computer.id, GroupMember.user_id == requester_id)).first()
        if allowed is not None:
            return None
        return (f"computer {computer.name!r} takes instances of its owner's friends only, and you "
                "are in none of the groups it names; ask its owner")
    return f"computer {computer.name!r} takes its owner's instances only; ask its owner"


def find_free_partition(session, sr_url, node_filter, computer_id=None, requester_id=None):
    """The id of a free partition fitting the filter, or None.

    Computers that already have the software release are preferred (no build
    to wait for), then partitions in a stable order so that a node fills up
    predictably. Only computers whose scope takes the requester's instances count.
    Each query walks the partial index of free partitions.
    """
    base = (select(Partition.id)
            .join(Computer, Partition.computer_id == Computer.id)
            .where(Partition.instance_id.is_(None), Computer.credential_hash.is_not(None),
                   Computer.lost_at.is_(None), SCOPE, ROOM,
                   *filter_clauses(node_filter, requester_id))
            .order_by(Partition.computer_id, Partition.id)
            .limit(1))
    if computer_id is not None:
        base = base.where(Partition.computer_id == computer_id)
    supplied = base.where(select(Supply.id).where(
        Supply.computer_id == Partition.computer_id, Supply.url == sr_url,
        Supply.requested == "available").exists())
    locking = session.get_bind().dialect.name == "postgresql"
    for query in (supplied, base):
        if locking:
            query = query.with_for_update(of=Partition, skip_locked=True)
        found = session.scalars(query, {"requester": requester_id}).first()
        if found is not None:
            return found
    return None


def waiting_reason(session, node_filter, requester_id):
    """Why a request waits (one line): a computer that would take it is held by its
    owner's policy (frozen, paused, draining, full), or no free partition fits."""
    held = session.execute(
        select(Computer.name, Computer.availability, Computer.accepting)
        .join(Partition, Partition.computer_id == Computer.id)
        .where(Partition.instance_id.is_(None), Computer.credential_hash.is_not(None), SCOPE,
               *filter_clauses(node_filter, requester_id), ~ROOM)
        .order_by(Computer.name).limit(1), {"requester": requester_id}).first()
    if held is None:
        return "waiting for a free partition that fits the request"
    name, availability, accepting = held
    why = (availability or {}).get("reason") or (availability or {}).get("state") or ""
    if accepting:
        why = "it runs as many instances as its owner allows"
    return f"waiting: computer {name} has room but {why or 'its owner holds it'}"


def claim(session, partition_id, instance_id):
    """Give the partition to the instance if it is still free. True if it was."""
    result = session.execute(update(Partition)
                             .where(Partition.id == partition_id, Partition.instance_id.is_(None))
                             .values(instance_id=instance_id)
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


def release(session, instance_id):
    """Free whatever partition holds the instance."""
    session.execute(update(Partition).where(Partition.instance_id == instance_id)
                    .values(instance_id=None).execution_options(synchronize_session=False))


def count_free(session, node_filter, requester_id, limit=10000):
    """How many free partitions of enrolled computers would take an instance of
    ``requester_id`` with this filter (the web's "there is space"), counted up to ``limit``."""
    inner = (select(Partition.id).join(Computer, Partition.computer_id == Computer.id)
             .where(Partition.instance_id.is_(None), Computer.credential_hash.is_not(None),
                    Computer.lost_at.is_(None), SCOPE, ROOM,
                    *filter_clauses(node_filter, requester_id)).limit(limit).subquery())
    return session.scalar(select(func.count()).select_from(inner), {"requester": requester_id})

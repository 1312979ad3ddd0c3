"""Volunteer credit: what each computer gave to other people's instances.

Owns the sums behind ``slapnode computer credit`` and ``slapnode credit top``:
for each computer, the CPU seconds and memory (MB x seconds) its partitions used
for instances whose owner is not the computer's owner, from the monthly usage
rows (13 months), turned into credit by ``slapnode.accounting.credit``
(1 per CPU-hour, 0.25 per GB-hour of memory). Usage is measured, so a partition
that was frozen, idle or stopped earns no CPU credit for that time.
"""

from sqlalchemy import func, select

from slapnode import accounting

from .models import Computer, Instance, UsageMonthly, User

DEFAULT_TOP = 20


def _given(computer_ids=None, month=None):
    """SQL: (computer_id, cpu_seconds, memory_mb_seconds) given to others' instances."""
    query = (select(UsageMonthly.computer_id, func.sum(UsageMonthly.cpu_seconds),
                    func.sum(UsageMonthly.memory_mb_seconds))
             .join(Computer, Computer.id == UsageMonthly.computer_id)
             .join(Instance, Instance.id == UsageMonthly.instance_id)
             .where((Computer.owner_id.is_(None)) | (Instance.owner_id != Computer.owner_id))
             .group_by(UsageMonthly.computer_id))
    if computer_ids is not None:
        query = query.where(UsageMonthly.computer_id.in_(computer_ids))
    if month is not None:
        query = query.where(UsageMonthly.month == month)
    return query


def _row(name, owner, cpu, memory):
    return {"computer": name, "owner": owner, "cpu_hours": round(float(cpu or 0) / 3600, 3),
            "memory_gb_hours": round(float(memory or 0) / 1024 / 3600, 3),
            "credit": str(accounting.credit(cpu or 0, memory or 0))}


def for_computers(session, computers, month=None):
    """Credit of each of ``computers`` (rows with .id, .name, .owner_id)."""
    given = {row[0]: row[1:] for row in session.execute(_given([c.id for c in computers], month))}
    owners = dict(session.execute(select(User.id, User.name)).all())
    return [_row(c.name, owners.get(c.owner_id), *given.get(c.id, (0, 0))) for c in computers]


def top(session, limit=DEFAULT_TOP, month=None):
    """Owners by the credit their computers earned, highest first."""
    per_owner = {}
    owners = dict(session.execute(select(User.id, User.name)).all())
    names = dict(session.execute(select(Computer.id, Computer.owner_id)).all())
    for computer_id, cpu, memory in session.execute(_given(month=month)):
        owner = names.get(computer_id)
        totals = per_owner.setdefault(owner, [0.0, 0.0, 0])
        totals[0] += float(cpu or 0)
        totals[1] += float(memory or 0)
        totals[2] += 1
    rows = [{"owner": owners.get(owner, "(no owner)"), "computers": count,
             "cpu_hours": round(cpu / 3600, 3), "memory_gb_hours": round(memory / 1024 / 3600, 3),
             "credit": accounting.credit(cpu, memory)}
            for owner, (cpu, memory, count) in per_owner.items()]
    rows.sort(key=lambda r: (-r["credit"], r["owner"]))
    for rank, row in enumerate(rows[:limit], 1):
        row["rank"], row["credit"] = rank, str(row["credit"])
    return rows[:limit]

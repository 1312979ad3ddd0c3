"""Usage history: what every instance (and so every computer) used, over time.

Owns turning a node's usage reports into history: the increments since the
previous report (pure: counters that went down started again from zero), one
raw sample per report kept 48 hours, hourly aggregates per instance kept 13
months (updated as reports arrive, so downsampling is a matter of deleting
old rows: ``prune``, run by the master on its own), and the series the API
reads. Times are the master's (UTC), not the node's: a node's clock decides
nothing that is billed.
"""

import datetime as dt

from sqlalchemy import delete, func, select

from .models import UsageHourly, UsageMonthly, UsageSample, iso, utcnow

MAX_GAP = 180.0                                # seconds one sample stands for, at most
RAW_KEEP = dt.timedelta(hours=48)
HOURLY_KEEP = dt.timedelta(days=396)          # 13 months
PRUNE_EVERY = 600.0                            # seconds between two prunes
COUNTERS = ("cpu_seconds", "net_in_bytes", "net_out_bytes")
MAX_COUNTER = float(2 ** 62)
MAX_POINTS = 20000


def _clean(value):
    """A reported figure as a non-negative finite number (bodies are finite already)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return min(max(number, 0.0), MAX_COUNTER)


def increments(previous, current):
    """What the counters grew by since ``previous`` (a report, or None). A counter
    smaller than before started again (a restarted container): all of it is new."""
    grown = {}
    for key in COUNTERS:
        if key not in current:
            grown[key] = 0.0
            continue
        now = _clean(current[key])
        before = (previous or {}).get(key)
        before = None if before is None else _clean(before)
        grown[key] = now if before is None or now < before else now - before
    return grown


def hour_of(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def _gap(previous, now):
    """Seconds since the previous report (what memory and disk are integrated over),
    at most MAX_GAP: a node that was away is not credited for the time it was away."""
    try:
        then = dt.datetime.fromisoformat((previous or {}).get("received_at") or "")
    except (TypeError, ValueError):
        return 0.0
    return min(max((now - then).total_seconds(), 0.0), MAX_GAP)


class Ingest:
    """The usage reports of one node report, recorded together: the hour's and the month's
    rows of all its instances are read in one query each, then updated in memory."""

    def __init__(self, session, instance_ids, now=None):
        self.session = session
        self.now = now or utcnow()
        self.hour = hour_of(self.now)
        self.month = self.now.strftime("%Y-%m")
        self.hourly, self.monthly = {}, {}
        if instance_ids:
            self.hourly = {r.instance_id: r for r in session.scalars(select(UsageHourly).where(
                UsageHourly.instance_id.in_(instance_ids), UsageHourly.hour == self.hour))}
            self.monthly = {(r.instance_id, r.computer_id): r for r in session.scalars(
                select(UsageMonthly).where(UsageMonthly.instance_id.in_(instance_ids),
                                           UsageMonthly.month == self.month))}

    def add(self, instance, computer_id, reported):
        """Record one report of ``instance``'s usage. Returns what to keep as the
        instance's current usage (the report, and when the master received it)."""
        now = self.now
        grown = increments(instance.usage, reported)
        gap = _gap(instance.usage, now)
        memory, disk = _clean(reported.get("memory_mb")), _clean(reported.get("disk_mb"))
        self.session.add(UsageSample(instance_id=instance.id, computer_id=computer_id, at=now,
                                     cpu_seconds=grown["cpu_seconds"], memory_mb=memory,
                                     disk_mb=disk, net_in_bytes=int(grown["net_in_bytes"]),
                                     net_out_bytes=int(grown["net_out_bytes"])))
        row = self.hourly.get(instance.id)
        if row is None:
            row = self.hourly[instance.id] = UsageHourly(
                instance_id=instance.id, hour=self.hour, computer_id=computer_id, samples=0,
                cpu_seconds=0.0, memory_mb_sum=0.0, memory_mb_peak=0.0, disk_mb_sum=0.0,
                disk_mb_peak=0.0, net_in_bytes=0, net_out_bytes=0)
            self.session.add(row)
        row.computer_id = computer_id
        row.samples += 1
        row.cpu_seconds += grown["cpu_seconds"]
        row.memory_mb_sum += memory
        row.memory_mb_peak = max(row.memory_mb_peak, memory)
        row.disk_mb_sum += disk
        row.disk_mb_peak = max(row.disk_mb_peak, disk)
        row.net_in_bytes += int(grown["net_in_bytes"])
        row.net_out_bytes += int(grown["net_out_bytes"])
        total = self.monthly.get((instance.id, computer_id))
        if total is None:
            total = self.monthly[(instance.id, computer_id)] = UsageMonthly(
                instance_id=instance.id, computer_id=computer_id, month=self.month,
                cpu_seconds=0.0, memory_mb_seconds=0.0, disk_mb_seconds=0.0)
            self.session.add(total)
        total.cpu_seconds += grown["cpu_seconds"]
        if not reported.get("frozen"):      # credit counts computing time: a frozen
            total.memory_mb_seconds += memory * gap     # partition's memory earns nothing
        total.disk_mb_seconds += disk * gap
        return {**reported, "received_at": iso(now)}


def prune(session, now=None):
    """Drop raw samples older than 48 h, hourly and monthly rows older than 13 months."""
    now = now or utcnow()
    raw = session.execute(delete(UsageSample).where(UsageSample.at < now - RAW_KEEP)).rowcount
    hourly = session.execute(delete(UsageHourly).where(UsageHourly.hour < now - HOURLY_KEEP)).rowcount
    monthly = session.execute(delete(UsageMonthly).where(
        UsageMonthly.month < (now - HOURLY_KEEP).strftime("%Y-%m"))).rowcount
    return {"samples": raw, "hourly": hourly, "monthly": monthly}


def _window(since, until):
    until = until or utcnow()
    since = since or until - dt.timedelta(days=1)
    return since, until


def instance_series(session, instance_id, resolution="hourly", since=None, until=None):
    """Points of one instance between ``since`` and ``until`` (default: the last day)."""
    since, until = _window(since, until)
    if resolution == "raw":
        rows = session.execute(select(
            UsageSample.at, UsageSample.cpu_seconds, UsageSample.memory_mb, UsageSample.disk_mb,
            UsageSample.net_in_bytes, UsageSample.net_out_bytes).where(
            UsageSample.instance_id == instance_id, UsageSample.at >= since, UsageSample.at < until)
            .order_by(UsageSample.at).limit(MAX_POINTS))
        return [{"at": iso(at), "cpu_seconds": round(cpu, 3), "memory_mb": memory,
                 "disk_mb": disk, "net_in_bytes": net_in, "net_out_bytes": net_out}
                for at, cpu, memory, disk, net_in, net_out in rows]
    rows = session.execute(select(
        UsageHourly.hour, UsageHourly.samples, UsageHourly.cpu_seconds, UsageHourly.memory_mb_sum,
        UsageHourly.memory_mb_peak, UsageHourly.disk_mb_sum, UsageHourly.disk_mb_peak,
        UsageHourly.net_in_bytes, UsageHourly.net_out_bytes).where(
        UsageHourly.instance_id == instance_id, UsageHourly.hour >= hour_of(since),
        UsageHourly.hour < until).order_by(UsageHourly.hour).limit(MAX_POINTS))
    return [_hourly_point(hour, samples, cpu, memory / max(samples, 1), memory_peak,
                          disk / max(samples, 1), disk_peak, net_in, net_out)
            for hour, samples, cpu, memory, memory_peak, disk, disk_peak, net_in, net_out in rows]


def _hourly_point(hour, samples, cpu, memory_avg, memory_peak, disk_avg, disk_peak, net_in, net_out):
    return {"hour": iso(hour), "samples": int(samples), "cpu_seconds": round(cpu, 3),
            "memory_mb_avg": round(memory_avg, 1), "memory_mb_peak": round(memory_peak, 1),
            "disk_mb_avg": round(disk_avg, 3), "disk_mb_peak": round(disk_peak, 3),
            "net_in_bytes": int(net_in), "net_out_bytes": int(net_out)}


def computer_series(session, computer_id, since=None, until=None):
    """Hourly points of everything a computer's partitions used (summed over instances)."""
    since, until = _window(since, until)
    samples = UsageHourly.samples
    rows = session.execute(
        select(UsageHourly.hour, func.sum(UsageHourly.samples), func.sum(UsageHourly.cpu_seconds),
               func.sum(UsageHourly.memory_mb_sum / samples), func.sum(UsageHourly.memory_mb_peak),
               func.sum(UsageHourly.disk_mb_sum / samples), func.sum(UsageHourly.disk_mb_peak),
               func.sum(UsageHourly.net_in_bytes), func.sum(UsageHourly.net_out_bytes))
        .where(UsageHourly.computer_id == computer_id, UsageHourly.hour >= hour_of(since),
               UsageHourly.hour < until, UsageHourly.samples > 0)
        .group_by(UsageHourly.hour).order_by(UsageHourly.hour).limit(MAX_POINTS)).all()
    return [_hourly_point(*row) for row in rows]

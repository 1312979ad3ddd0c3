"""The volunteer's policy: what the machine's owner allows the partitions (pure).

Owns the ``[policy]`` section of the node config (its keys, their parsing and
checks), the time windows (``mon-fri 19:00-07:00, sat-sun all``), and the one
decision the node takes from them: may the partitions run now, and if not why and
until when. Nothing here reads the machine or changes it: the caller passes what
it observed (the time, the owner's CPU load, a local session's activity, paused
or not) and applies the verdict (``deploy/cgroups.py`` freezes and limits).
"""

import datetime as dt
import re
from dataclasses import asdict, dataclass, fields

from .errors import UsageError

RUN_WHEN = ("always", "idle")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass
class Policy:
    cpu_limit_pct: float = 100.0     # of the whole machine, all partitions together
    memory_limit_mb: int = 0         # all partitions together; 0: no limit of our own
    disk_limit_gb: float = 0.0       # all partitions together; 0: no limit
    run_when: str = "always"         # always | idle
    idle_cpu_pct: float = 25.0       # the owner's CPU load (not the partitions') above which
    idle_minutes: float = 5.0        # ... the owner is busy; calm this long: partitions thaw
    hours: str = ""                  # time windows in local time; "": all the time
    max_instances: int = 0           # 0: as many as there are partitions

    KEYS = ("cpu_limit_pct", "memory_limit_mb", "disk_limit_gb", "run_when", "idle_cpu_pct",
            "idle_minutes", "hours", "max_instances")

    def as_dict(self):
        return asdict(self)


def _number(key, raw, kind, low, high):
    try:
        value = kind(str(raw).strip())
    except ValueError:
        raise UsageError(f"policy {key} = {raw!r}: expected a {'whole ' if kind is int else ''}"
                         "number") from None
    if not low <= value <= high or value != value:
        raise UsageError(f"policy {key} = {raw!r}: must be between {low} and {high}")
    return value


def parse_value(key, raw):
    """One policy value from text (the config file or ``node policy set``)."""
    if key not in Policy.KEYS:
        raise UsageError(f"unknown policy key {key!r}; known: {', '.join(Policy.KEYS)}")
    if key == "cpu_limit_pct":
        return _number(key, raw, float, 1, 100)
    if key == "idle_cpu_pct":
        return _number(key, raw, float, 1, 100)
    if key == "idle_minutes":
        return _number(key, raw, float, 0, 24 * 60)
    if key == "memory_limit_mb":
        return _number(key, raw, int, 0, 1 << 30)
    if key == "disk_limit_gb":
        return _number(key, raw, float, 0, 1 << 30)
    if key == "max_instances":
        return _number(key, raw, int, 0, 100000)
    if key == "run_when":
        value = str(raw).strip().lower()
        if value not in RUN_WHEN:
            raise UsageError(f"policy run_when = {raw!r}: must be always or idle")
        return value
    text = " ".join(str(raw).split())
    parse_hours(text)
    return text


def from_items(items, source="policy"):
    """A Policy from (key, text) pairs; a bad one is a UsageError naming it."""
    values = {}
    for key, raw in items:
        try:
            values[key] = parse_value(key, raw)
        except UsageError as exc:
            raise UsageError(f"{source}: {exc}") from None
    return Policy(**values)


def to_items(policy):
    """(key, text) pairs to write back."""
    out = []
    for item in fields(Policy):
        value = getattr(policy, item.name)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        out.append((item.name, str(value)))
    return out


# ---- time windows -----------------------------------------------------------------

_WINDOW = re.compile(r"^(?P<days>[a-z]{3}(?:-[a-z]{3})?)\s+(?P<span>all|\d{1,2}:\d{2}-\d{1,2}:\d{2})$")


def _minutes(text, whole):
    hours, minutes = text.split(":")
    hours, minutes = int(hours), int(minutes)
    if not (0 <= hours <= 24 and 0 <= minutes < 60) or (hours == 24 and minutes):
        raise UsageError(f"hours: {whole!r}: {text} is not a time of day (00:00 to 24:00)")
    return hours * 60 + minutes


def _days(text, whole):
    first, _, last = text.partition("-")
    last = last or first
    for day in (first, last):
        if day not in DAYS:
            raise UsageError(f"hours: {whole!r}: {day!r} is not a day (mon, tue, … sun)")
    start, end = DAYS.index(first), DAYS.index(last)
    return [d % 7 for d in range(start, end + 1 if end >= start else end + 8)]


def parse_hours(text):
    """``"mon-fri 19:00-07:00, sat-sun all"`` -> [(weekday, start minute, end minute)],
    a window crossing midnight split in two (its second half on the next day). Empty
    text: always. Raises UsageError naming the part it cannot read."""
    windows = []
    for part in filter(None, (p.strip() for p in (text or "").lower().split(","))):
        found = _WINDOW.match(" ".join(part.split()))
        if not found:
            raise UsageError(f"hours: {part!r}: expected DAYS HH:MM-HH:MM or DAYS all, "
                             "e.g. 'mon-fri 19:00-07:00, sat-sun all'")
        days = _days(found["days"], part)
        if found["span"] == "all":
            windows += [(d, 0, 1440) for d in days]
            continue
        start_text, end_text = found["span"].split("-")
        start, end = _minutes(start_text, part), _minutes(end_text, part)
        if start == end:
            raise UsageError(f"hours: {part!r}: the window is empty; use 'all' for the whole day")
        for day in days:
            if end > start:
                windows.append((day, start, end))
            else:                   # across midnight
                windows.append((day, start, 1440))
                windows.append(((day + 1) % 7, 0, end))
    return windows


def in_hours(windows, moment):
    """Whether local time ``moment`` is inside the windows (no windows: always)."""
    if not windows:
        return True
    minute = moment.hour * 60 + moment.minute
    return any(day == moment.weekday() and start <= minute < end for day, start, end in windows)


def next_change(windows, moment, horizon_days=8):
    """The first minute after ``moment`` at which ``in_hours`` changes, or None."""
    if not windows:
        return None
    now = in_hours(windows, moment)
    probe = moment.replace(second=0, microsecond=0)
    for _ in range(horizon_days * 24 * 60):
        probe += dt.timedelta(minutes=1)
        if in_hours(windows, probe) != now:
            return probe
    return None


# ---- the decision -----------------------------------------------------------------

@dataclass
class Observed:
    """What the node saw just now."""
    now: dt.datetime                 # local time, aware
    owner_cpu_pct: float = 0.0       # CPU load of everything but the partitions, % of machine
    session_active: bool = False     # a local user session is active (logind), where known
    busy_since: float | None = None  # monotonic time the owner was last seen busy
    clock: float = 0.0               # monotonic now
    paused: bool = False


@dataclass
class Verdict:
    run: bool
    state: str                       # running | frozen | paused
    reason: str = ""
    next_change: str | None = None   # ISO time the state may change (hours), if known

    def as_dict(self):
        return asdict(self)


def owner_busy(policy, observed):
    """Is the owner using the machine right now (the idle rule's input)?"""
    return observed.session_active or observed.owner_cpu_pct > policy.idle_cpu_pct


def decide(policy, observed, windows=None):
    """May the partitions run now? Paused beats hours, hours beat idleness."""
    if observed.paused:
        return Verdict(False, "paused", "paused by the machine's owner (`slapnode node resume`)")
    windows = parse_hours(policy.hours) if windows is None else windows
    if not in_hours(windows, observed.now):
        change = next_change(windows, observed.now)
        return Verdict(False, "frozen", "outside the hours the owner allows"
                       + (f" (until {change:%a %H:%M})" if change else ""),
                       change.isoformat() if change else None)
    change = next_change(windows, observed.now)
    change_text = change.isoformat() if change else None
    if policy.run_when == "idle" and observed.busy_since is not None:
        calm_for = observed.clock - observed.busy_since
        if calm_for < policy.idle_minutes * 60:
            return Verdict(False, "frozen", "the owner is using the machine", change_text)
    return Verdict(True, "running", "", change_text)


def over_disk(policy, disk_mb):
    """{partition: reason} of the partitions over their share of ``disk_limit_gb``
    (shared equally among the partitions in use). ``disk_mb``: {partition: MB used}."""
    if not policy.disk_limit_gb or not disk_mb:
        return {}
    share = policy.disk_limit_gb * 1024 / len(disk_mb)
    return {ref: (f"uses {used:,.0f} MB of disk, over its share ({share:,.0f} MB) of the "
                  f"{policy.disk_limit_gb:g} GB the machine's owner allows; free some space")
            for ref, used in disk_mb.items() if used > share}

"""Moments given on the command line: a duration from now (30d, 12h, 90m, 2w) or a date.

Pure: text in, an aware UTC datetime out, or a UsageError that says what to give.
"""

import datetime as dt
import re

from ..errors import UsageError

DURATION_RE = re.compile(r"^(\d{1,6})([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse(text, option, future=True, now=None):
    """``text`` as a moment: a duration counts from ``now`` forward (``future``) or back;
    a date or date and time is UTC unless it names its offset."""
    now = now or dt.datetime.now(dt.timezone.utc)
    match = DURATION_RE.match(text.strip())
    if match:
        span = dt.timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
        return now + span if future else now - span
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option} {text!r}: give a duration (30d, 12h, 90m, 2w) or a date "
                         "(2027-01-31 or 2027-01-31T18:00+01:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)

"""The accounting rules, pure: months, proration, invoice lines, totals, credit, CSV.

Owns the arithmetic an ERP would keep, with no database and no clock of its own
(the caller says what "now" is): months are UTC calendar months; a subscription
is prorated to the second over the month's own length; metered lines count
CPU-hours and GB-months of disk from the usage history; every amount is an exact
decimal rounded once, per line, to the cent (half up), and a total is the sum of
its lines. Floats never carry money. ``master/invoices.py`` stores what this
computes; the CLI prints it. The arithmetic is in integers (cents, millionths,
milliseconds of CPU, MB-seconds of disk), which are exact; rounding is half up, once.
"""

import csv
import datetime as dt
import functools
import io
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
UTC = dt.timezone.utc
MICROS_PER_CENT = 10_000            # prices in millionths of the currency; amounts in cents
# Volunteer credit: what a computer's partitions gave to other users' instances.
CREDIT_PER_CPU_HOUR = Decimal("1")
CREDIT_PER_MEMORY_GB_HOUR = Decimal("0.25")


class MonthError(ValueError):
    pass


def month_bounds(month):
    """'2027-01' -> (2027-01-01T00:00Z, 2027-02-01T00:00Z)."""
    match = MONTH_RE.match(month or "")
    if not match:
        raise MonthError(f"month {month!r} must be YYYY-MM, e.g. 2027-01")
    year, number = int(match.group(1)), int(match.group(2))
    start = dt.datetime(year, number, 1, tzinfo=UTC)
    end = dt.datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=UTC)
    return start, end


def month_of(moment):
    return moment.astimezone(UTC).strftime("%Y-%m")


def previous_month(month):
    start, _ = month_bounds(month)
    return month_of(start - dt.timedelta(days=1))


def half_up(numerator, denominator):
    """numerator / denominator rounded half up, in integers (exact; both >= 0)."""
    return (2 * numerator + denominator) // (2 * denominator)


def _micros_text(micros):
    """A quantity in millionths as text with six decimals: 354839 -> '0.354839'."""
    sign = "-" if micros < 0 else ""
    whole, part = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{part:06d}"


def money(total_cents):
    """Cents as text with two decimals: 1234 -> '12.34', -5 -> '-0.05'."""
    sign = "-" if total_cents < 0 else ""
    whole, part = divmod(abs(int(total_cents)), 100)
    return f"{sign}{whole}.{part:02d}"


@functools.lru_cache(maxsize=1024)
def price_text(micros):
    """A metered price in millionths as text: 10000 -> '0.01'."""
    return str((Decimal(micros) / 1_000_000).normalize()) if micros else "0"


@dataclass(frozen=True)
class Period:
    """A stretch of one instance's life on one release, with that release's prices."""
    instance_id: int
    title: str
    release: str
    price_cents: int
    cpu_hour_micros: int
    disk_gb_month_micros: int
    start: dt.datetime
    end: dt.datetime | None


@functools.lru_cache(maxsize=4096)      # most lines share their bounds
def _stamp(moment):
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def lines(periods, usage, month, until=None):
    """The lines of one user's invoice for ``month``: one subscription line per period
    (the time it existed in the month, to the second, ``until`` at the latest for a
    draft), then CPU and disk lines per instance where the release meters them.
    ``usage``: {instance_id: (cpu_seconds, disk_mb_seconds)} for the month."""
    start, end = month_bounds(month)
    stop = min(end, until) if until is not None else end
    month_seconds = int((end - start).total_seconds())
    out = []
    metered = {}
    for period in sorted(periods, key=lambda p: (p.start, p.instance_id)):
        first = max(period.start, start)
        last = min(period.end or stop, stop)
        seconds = int((last - first).total_seconds())
        if seconds < 0 or (seconds == 0 and until is None):
            continue                # not in the month (a draft shows a life that just began)
        out.append({
            "instance_id": period.instance_id, "title": period.title, "kind": "subscription",
            "description": f"{period.release}, {_stamp(first)} to {_stamp(last)} UTC "
                           f"({seconds} s of the month's {month_seconds} s)",
            "period_start": first, "period_end": last,
            "quantity": _micros_text(half_up(seconds * 1_000_000, month_seconds)), "unit": "month",
            "unit_price": money(period.price_cents),
            "amount_cents": half_up(period.price_cents * seconds, month_seconds),
        })
        metered[period.instance_id] = period            # the latest period's prices
    # metered lines in integers: CPU time to the millisecond, disk to the MB-second
    for instance_id, period in sorted(metered.items()):
        cpu_seconds, disk_mb_seconds = usage.get(instance_id, (0.0, 0.0))
        cpu_ms = int(round(cpu_seconds * 1000))
        if period.cpu_hour_micros and cpu_ms > 0:
            out.append({
                "instance_id": instance_id, "title": period.title, "kind": "cpu",
                "description": f"{period.release}: CPU time", "period_start": start,
                "period_end": stop, "quantity": _micros_text(half_up(cpu_ms * 1_000_000, 3_600_000)),
                "unit": "cpu-hour", "unit_price": price_text(period.cpu_hour_micros),
                "amount_cents": half_up(cpu_ms * period.cpu_hour_micros, 3_600_000 * MICROS_PER_CENT),
            })
        mb_seconds = int(round(disk_mb_seconds))
        if period.disk_gb_month_micros and mb_seconds > 0:
            per_gb_month = 1024 * month_seconds
            out.append({
                "instance_id": instance_id, "title": period.title, "kind": "disk",
                "description": f"{period.release}: disk", "period_start": start,
                "period_end": stop, "quantity": _micros_text(half_up(mb_seconds * 1_000_000, per_gb_month)),
                "unit": "GB-month", "unit_price": price_text(period.disk_gb_month_micros),
                "amount_cents": half_up(mb_seconds * period.disk_gb_month_micros,
                                        per_gb_month * MICROS_PER_CENT),
            })
    return out


def total(invoice_lines):
    return sum(line["amount_cents"] for line in invoice_lines)


def negated(invoice_lines):
    """The lines of a credit note that cancels these."""
    return [{**line, "amount_cents": -line["amount_cents"],
             "quantity": str(-Decimal(line["quantity"]))} for line in invoice_lines]


def credit(cpu_seconds, memory_mb_seconds):
    """Volunteer credit for what a computer gave: 1 per CPU-hour plus 0.25 per GB-hour of
    memory (kept two decimals). Only time that was used counts: a frozen or idle partition
    earns nothing for its CPU."""
    cpu_hours = Decimal(repr(float(cpu_seconds))) / 3600
    memory_gb_hours = Decimal(repr(float(memory_mb_seconds))) / 1024 / 3600
    value = cpu_hours * CREDIT_PER_CPU_HOUR + memory_gb_hours * CREDIT_PER_MEMORY_GB_HOUR
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


CSV_COLUMNS = ("number", "kind", "month", "currency", "title", "line_kind", "description",
               "period_start", "period_end", "quantity", "unit", "unit_price", "amount")


def to_csv(invoice):
    """An invoice view (as the API gives it) as CSV: one row per line, then the total."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    head = (invoice.get("number") or "draft", invoice["kind"], invoice["month"], invoice["currency"])
    for line in invoice["lines"]:
        writer.writerow(head + (_safe(line["title"]), line["kind"], _safe(line["description"]),
                                line["period_start"], line["period_end"], line["quantity"],
                                line["unit"], line["unit_price"], line["amount"]))
    writer.writerow(head + ("", "total", "", "", "", "", "", "", invoice["total"]))
    return out.getvalue()


def _safe(text):
    """A cell a spreadsheet will not run as a formula (titles are users' text)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text

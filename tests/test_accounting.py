"""The accounting rules (slapnode/accounting.py), pure: months, proration to the second,
metered lines, exact totals, credit, CSV."""

import datetime as dt
from decimal import Decimal

import pytest

from slapnode import accounting

UTC = dt.timezone.utc


def at(*args):
    return dt.datetime(*args, tzinfo=UTC)


def period(start, end=None, price=3100, cpu=0, disk=0, instance_id=1, title="w"):
    return accounting.Period(instance_id, title, "boinc", price, cpu, disk, start, end)


def test_months_are_utc_calendar_months():
    assert accounting.month_bounds("2028-02") == (at(2028, 2, 1), at(2028, 3, 1))
    assert accounting.month_bounds("2026-12") == (at(2026, 12, 1), at(2027, 1, 1))
    assert accounting.previous_month("2027-01") == "2026-12"
    assert accounting.month_of(dt.datetime(2027, 1, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == "2026-12"
    for bad in ("2027-13", "2027-1", "27-01", ""):
        with pytest.raises(accounting.MonthError, match="YYYY-MM"):
            accounting.month_bounds(bad)


def test_a_life_across_a_month_boundary_is_split_and_prorated_to_the_second():
    life = [period(at(2025, 1, 21), at(2025, 2, 15))]
    january = accounting.lines(life, {}, "2025-01")
    february = accounting.lines(life, {}, "2025-02")
    assert [line["amount_cents"] for line in january] == [1100]      # 11 of 31 days of 31.00
    assert [line["amount_cents"] for line in february] == [1550]     # 14 of 28 days
    assert january[0]["period_end"] == at(2025, 2, 1) and february[0]["period_start"] == at(2025, 2, 1)
    assert january[0]["quantity"] == str((Decimal(11) / 31).quantize(Decimal("0.000001")))
    one_second = accounting.lines([period(at(2025, 1, 10), at(2025, 1, 10, 0, 0, 1), price=267840000)],
                                  {}, "2025-01")
    assert one_second[0]["amount_cents"] == 100                    # 2,678,400.00 a month: 1.00 a second


def test_a_draft_stops_at_now_and_an_open_period_runs_to_the_month_end():
    life = [period(at(2025, 3, 1))]
    assert accounting.lines(life, {}, "2025-03")[0]["amount_cents"] == 3100
    draft = accounting.lines(life, {}, "2025-03", until=at(2025, 3, 11))
    assert draft[0]["amount_cents"] == 1000
    assert accounting.lines([period(at(2025, 4, 2))], {}, "2025-03") == []


def test_metered_lines_count_cpu_hours_and_disk_gb_months_exactly():
    life = [period(at(2025, 1, 1), price=0, cpu=10_000, disk=50_000)]     # 0.01 /CPU-h, 0.05 /GB-month
    month_seconds = 31 * 86400
    lines = accounting.lines(life, {1: (7200.0, 2048.0 * month_seconds)}, "2025-01")
    by_kind = {line["kind"]: line for line in lines}
    assert by_kind["cpu"]["quantity"] == "2.000000" and by_kind["cpu"]["amount_cents"] == 2
    assert by_kind["disk"]["quantity"] == "2.000000" and by_kind["disk"]["amount_cents"] == 10
    assert accounting.total(lines) == 12


def test_each_line_is_rounded_half_up_once_and_the_total_is_their_sum():
    third = [period(at(2025, 1, 1), at(2025, 1, 1) + dt.timedelta(seconds=31 * 86400 // 3), price=1,
                    instance_id=i) for i in (1, 2, 3)]
    lines = accounting.lines(third, {}, "2025-01")
    assert [line["amount_cents"] for line in lines] == [0, 0, 0]    # 0.333… cents each
    half = accounting.lines([period(at(2025, 1, 1), at(2025, 1, 16, 12), price=1)], {}, "2025-01")
    assert half[0]["amount_cents"] == 1                            # exactly 0.5 cent: up
    assert accounting.money(-5) == "-0.05" and accounting.money(123456) == "1234.56"


def test_a_credit_note_negates_every_line():
    lines = accounting.lines([period(at(2025, 1, 21), at(2025, 2, 15))], {}, "2025-01")
    assert accounting.total(accounting.negated(lines)) == -accounting.total(lines)
    assert accounting.negated(lines)[0]["quantity"].startswith("-")


def test_volunteer_credit_is_cpu_hours_and_memory_gb_hours():
    assert accounting.credit(3600, 0) == Decimal("1.00")
    assert accounting.credit(0, 1024 * 3600 * 4) == Decimal("1.00")
    assert accounting.credit(1800, 1024 * 3600) == Decimal("0.75")


def test_csv_has_one_row_per_line_and_titles_cannot_become_formulas():
    view = {"number": "INV-000001", "kind": "invoice", "month": "2025-01", "currency": "EUR",
            "total": "1.00", "lines": [{"title": "=HYPERLINK(\"x\")", "kind": "subscription",
                                         "description": "d", "period_start": "a", "period_end": "b",
                                         "quantity": "1", "unit": "month", "unit_price": "1.00",
                                         "amount": "1.00"}]}
    rows = accounting.to_csv(view).splitlines()
    assert rows[0].startswith("number,kind,month") and len(rows) == 3
    assert "'=HYPERLINK" in rows[1] and rows[2].endswith(",1.00")

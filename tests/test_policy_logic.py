"""The volunteer's policy, pure: its values, time windows and the decision."""

import datetime as dt

import pytest

from slapnode import nodeconfig
from slapnode import policy as p
from slapnode.errors import UsageError

TZ = dt.timezone(dt.timedelta(hours=1))


def at(day, hour, minute=0):
    """A local time on 2026-11-23 (a Monday) + ``day`` days."""
    return dt.datetime(2026, 11, 23 + day, hour, minute, tzinfo=TZ)


def test_hours_windows_cross_midnight_and_weekends():
    windows = p.parse_hours("mon-fri 19:00-07:00, sat-sun all")
    assert p.in_hours(windows, at(0, 20)) and p.in_hours(windows, at(1, 6, 59))
    assert not p.in_hours(windows, at(0, 12)) and not p.in_hours(windows, at(1, 7))
    assert p.in_hours(windows, at(5, 12)) and p.in_hours(windows, at(6, 23, 59))
    assert not p.in_hours(windows, at(7, 3))        # sunday ends at midnight: monday 03:00 is out
    assert p.next_change(windows, at(0, 12)) == at(0, 19)
    assert p.next_change(windows, at(0, 20)) == at(1, 7)
    assert p.parse_hours("") == [] and p.in_hours([], at(0, 12))
    assert p.next_change([], at(0, 12)) is None
    assert p.parse_hours("sun-mon 22:00-23:00") == [(6, 1320, 1380), (0, 1320, 1380)]


@pytest.mark.parametrize("text, words", [
    ("mon-fri", "expected DAYS HH:MM-HH:MM"), ("mon 25:00-26:00", "not a time of day"),
    ("xyz all", "not a day"), ("mon 10:00-10:00", "the window is empty")])
def test_bad_hours_say_what_is_wrong(text, words):
    with pytest.raises(UsageError, match=words):
        p.parse_hours(text)


def test_values_are_checked_and_named():
    assert p.parse_value("cpu_limit_pct", "25") == 25.0
    assert p.parse_value("run_when", " IDLE ") == "idle"
    for key, raw, words in (("cpu_limit_pct", "0", "between 1 and 100"),
                            ("memory_limit_mb", "lots", "whole number"),
                            ("run_when", "sometimes", "always or idle"),
                            ("colour", "blue", "unknown policy key")):
        with pytest.raises(UsageError, match=words):
            p.parse_value(key, raw)


def test_decision_paused_beats_hours_which_beat_idleness():
    idle = p.Policy(run_when="idle", idle_minutes=1, hours="mon-fri 19:00-07:00")
    windows = p.parse_hours(idle.hours)
    evening = at(0, 20)
    assert p.decide(idle, p.Observed(now=evening, paused=True), windows).state == "paused"
    outside = p.decide(idle, p.Observed(now=at(0, 12)), windows)
    assert (outside.run, outside.state) == (False, "frozen")
    assert "outside the hours" in outside.reason and outside.next_change == at(0, 19).isoformat()
    busy = p.decide(idle, p.Observed(now=evening, clock=100, busy_since=70), windows)
    assert (busy.run, busy.reason) == (False, "the owner is using the machine")
    calm = p.decide(idle, p.Observed(now=evening, clock=131, busy_since=70), windows)
    assert calm.run and calm.state == "running"
    always = p.Policy()
    assert p.decide(always, p.Observed(now=evening, clock=100, busy_since=99)).run
    assert p.owner_busy(idle, p.Observed(now=evening, owner_cpu_pct=30))
    assert p.owner_busy(idle, p.Observed(now=evening, session_active=True))
    assert not p.owner_busy(idle, p.Observed(now=evening, owner_cpu_pct=10))


def test_policy_round_trips_through_the_node_config(tmp_path):
    config = nodeconfig.NodeConfig(name="n", state_dir=str(tmp_path))
    config.policy = p.Policy(cpu_limit_pct=50, hours="sat-sun all", run_when="idle", idle_minutes=0.5)
    path = nodeconfig.save(config, tmp_path / "node.cfg")
    assert "[policy]" in path.read_text() and "cpu_limit_pct = 50" in path.read_text()
    again = nodeconfig.load(path)
    assert again.policy == config.policy and again.cpu_limit_pct == 100     # [limits] untouched
    path.write_text(path.read_text().replace("run_when = idle", "run_when = never"))
    with pytest.raises(UsageError, match=r"\[policy\].*run_when"):
        nodeconfig.load(path)


def test_a_partition_over_its_share_of_the_disk_is_named():
    limited = p.Policy(disk_limit_gb=1)
    assert p.over_disk(limited, {"slappart0": 100.0, "slappart1": 700.0}) == {
        "slappart1": "uses 700 MB of disk, over its share (512 MB) of the 1 GB the machine's "
                     "owner allows; free some space"}
    assert p.over_disk(p.Policy(), {"slappart0": 10**9}) == {}

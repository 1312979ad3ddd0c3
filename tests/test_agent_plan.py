"""The agent's pure decisions: what to do per partition, and the status it reports."""

from slapnode.agent import plan, status_of
from slapnode.deploy.partition import inputs_hash


def doc(*partitions):
    return {"partitions": [{"reference": ref, "instance": inst} for ref, inst in partitions]}


def inst(id_=1, state="started", params=None, software="sr"):
    return {"id": id_, "title": f"t{id_}", "software": software, "type": "default",
            "state": state, "parameters": params or {}, "shared_instances": []}


DIGESTS = {"sr": "d1"}


def kinds(actions):
    return [(a.reference, a.kind) for a in actions]


def test_a_new_instance_is_deployed():
    assert kinds(plan(doc(("p0", inst())), {}, DIGESTS)) == [("p0", "deploy")]


def test_unchanged_inputs_are_only_checked():
    i = inst()
    local = {"p0": {"instance_id": 1, "hash": inputs_hash(i, "d1"), "state": "started"}}
    assert kinds(plan(doc(("p0", i)), local, DIGESTS)) == [("p0", "check")]


def test_changed_parameters_or_release_redeploy():
    i = inst()
    local = {"p0": {"instance_id": 1, "hash": inputs_hash(i, "d1"), "state": "started"}}
    assert kinds(plan(doc(("p0", inst(params={"a": "1"}))), local, DIGESTS)) == [("p0", "deploy")]
    assert kinds(plan(doc(("p0", i)), local, {"sr": "d2"})) == [("p0", "deploy")]


def test_state_changes_start_or_stop():
    i = inst(state="stopped")
    local = {"p0": {"instance_id": 1, "hash": inputs_hash(i, "d1"), "state": "started"}}
    assert kinds(plan(doc(("p0", i)), local, DIGESTS)) == [("p0", "stop")]
    j = inst(state="started")
    local = {"p0": {"instance_id": 1, "hash": inputs_hash(j, "d1"), "state": "stopped"}}
    assert kinds(plan(doc(("p0", j)), local, DIGESTS)) == [("p0", "start")]


def test_destroyed_freed_and_reassigned_partitions_are_wiped():
    local = {"p0": {"instance_id": 1, "hash": "x", "state": "started"},
             "p1": {"instance_id": 2, "hash": "x", "state": "started"},
             "p9": {"instance_id": 3, "hash": "x", "state": "started"}}
    actions = plan(doc(("p0", inst(1, state="destroyed")), ("p1", None), ("p2", None)),
                   local, DIGESTS)
    assert kinds(actions) == [("p0", "destroy"), ("p1", "destroy"), ("p9", "destroy")]
    moved = plan(doc(("p0", inst(7))), {"p0": {"instance_id": 1, "hash": "x"}}, DIGESTS)
    assert kinds(moved) == [("p0", "destroy"), ("p0", "deploy")]


def test_a_partition_waits_for_its_release():
    assert kinds(plan(doc(("p0", inst())), {}, {"sr": None})) == [("p0", "wait")]


def test_status_from_services_and_promises():
    ok = [{"name": "web", "ok": True, "message": ""}]
    bad = [{"name": "web", "ok": False, "message": "refused"}]
    assert status_of("started", {"web": ("RUNNING", "")}, ok, True) == ("ready", "")
    assert status_of("started", {"web": ("STARTING", "")}, ok, True) == ("ready", "")
    assert status_of("started", {"web": ("STARTING", "")}, [], True)[0] == "deploying"
    assert status_of("started", {"web": ("RUNNING", "")}, bad, True) == \
        ("deploying", "promise web: refused")
    status, reason = status_of("started", {"web": ("FATAL", "Exited too quickly")}, ok, True)
    assert status == "error" and "web" in reason
    assert status_of("stopped", {}, [], False) == ("stopped", "")
    assert status_of("started", {}, [], False)[0] == "deploying"


# -- schedules: crash loops, failed builds, reconnections, promise intervals -------------

from slapnode.agent import FATAL_RETRY_FIRST, FATAL_RETRY_MAX, _fatal_backoff, retry_delay  # noqa: E402
from slapnode.deploy import promises  # noqa: E402
from slapnode.software.supply import BACKOFF_FIRST, BACKOFF_MAX, Backoff  # noqa: E402


def test_a_crash_loop_is_retried_after_10_20_40_s_and_never_more_than_10_min():
    fatal = {"web": ("FATAL", "Exited too quickly")}
    here, now, delays = {}, 1000.0, []
    for _ in range(12):
        retry = _fatal_backoff(fatal, here, fresh=False, now=now)
        delays.append(retry["retry_at"] - now)
        assert not retry.get("now") or here.get("fatal", 0) > 0   # the first sighting waits
        here = {"fatal": retry["fatal"], "retry_at": retry["retry_at"]}
        assert not _fatal_backoff(fatal, here, fresh=False, now=now + 1)["now"]   # not before
        now = retry["retry_at"]
    assert delays[:4] == [FATAL_RETRY_FIRST, 20.0, 40.0, 80.0]
    assert max(delays) == FATAL_RETRY_MAX == 600.0 and delays[-1] == 600.0
    assert _fatal_backoff({"web": ("RUNNING", "")}, here, fresh=False) == {"fatal": 0, "retry_at": 0}
    assert _fatal_backoff(fatal, here, fresh=True) == {"now": True}      # a redeploy retries now


def test_a_failing_build_waits_30_s_doubling_up_to_an_hour(tmp_path):
    backoff = Backoff(tmp_path / "b.json")
    now, waits = 5000.0, []
    for _ in range(10):
        backoff.failed("u", "no compiler", now=now)
        waits.append(backoff.state["u"]["next"] - now)
        assert backoff.waiting("u", now=now + 1) and backoff.failure("u") == ("no compiler",
                                                                             backoff.state["u"]["next"])
    assert waits[:3] == [BACKOFF_FIRST, 60.0, 120.0] and waits[-1] == BACKOFF_MAX == 3600.0
    backoff.save()
    assert Backoff(tmp_path / "b.json").failure("u")[0] == "no compiler"    # kept across restarts
    backoff.succeeded("u")
    assert backoff.failure("u") is None and not backoff.waiting("u")


def test_reconnections_wait_half_to_one_and_a_half_times_their_delay():
    assert retry_delay(8.0, rand=lambda: 0.0) == 4.0
    assert retry_delay(8.0, rand=lambda: 0.999) < 12.0
    assert 4.0 <= retry_delay(8.0) < 12.0


def test_a_promise_runs_again_when_it_failed_or_its_interval_passed():
    kept = {"ok-recent": {"ok": True, "at": 100.0, "interval": 60.0},
            "ok-old": {"ok": True, "at": 30.0, "interval": 60.0},
            "failing": {"ok": False, "at": 140.0, "interval": 60.0},
            "never": {"ok": False, "at": 0, "interval": 60.0}}
    assert promises.due(kept, now=150.0) == ["failing", "never", "ok-old"]
    assert promises.due({}, now=150.0) == []


def test_passes_come_quickly_while_an_instance_is_deploying_then_back_off():
    from slapnode.agent import settle_delay

    waits, previous = [], None
    for _ in range(7):
        previous = settle_delay(previous, True, 5.0)
        waits.append(previous)
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert settle_delay(2.0, False, 5.0) is None          # nothing deploying: the period


def test_the_next_free_partitions_are_kept_warm_in_the_masters_order():
    from slapnode.deploy.warm import choose, free

    doc = {"partitions": [{"reference": "p0", "instance": {"id": 1}},
                          {"reference": "p1", "instance": None},
                          {"reference": "p2"},
                          {"reference": "p3", "instance": None}]}
    assert choose(doc, {}, 2) == ["p1", "p2"]
    assert choose(doc, {"p1": {"instance_id": 9}}, 2) == ["p2", "p3"]    # a destroy pending
    assert choose(doc, {}, 0) == [] and choose(doc, {}, 10) == ["p1", "p2", "p3"]
    assert free(doc, "p1") and not free(doc, "p0") and not free(doc, "p9")


def test_a_warm_container_is_named_after_its_instance():
    from types import SimpleNamespace

    from slapnode.deploy.isolation import LxcIsolation

    part = SimpleNamespace(reference="slappart3")
    assert LxcIsolation.uts_name(part) == "slappart3"
    assert LxcIsolation.uts_name(part, "web.ada.grid.test") == "web.ada.grid.test"
    assert LxcIsolation.uts_name(part, "x" * 60 + ".ada.grid.test") == "x" * 60
    for bad in ("-F/etc/shadow", "a b", "web\nlxc.mount.entry = /", "UPPER.test", "a..b"):
        assert LxcIsolation.uts_name(part, bad) == "slappart3", bad

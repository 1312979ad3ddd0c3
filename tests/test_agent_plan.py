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

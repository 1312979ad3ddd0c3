"""Lost nodes: a node that stops polling for ``--lost-after`` seconds is lost, its
instances show ``unreachable`` with when it was last seen, ``instance request --move``
puts one on another node, destroying one frees it at once, and the lost node, back,
is told its partition is free (its agent destroys what it kept). SQLite and PostgreSQL."""

import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from slapnode.client import Client
from slapnode.errors import MasterError

from .conftest import fresh_pg_database, require_pg, run_cli, start_master, stop_process

LOST_AFTER = 2


@pytest.fixture(params=["sqlite", "postgresql"])
def quick_master(request):
    """A master that calls a node lost after 2 s without a poll."""
    with contextlib.ExitStack() as stack:
        db = None
        if request.param == "postgresql":
            require_pg()
            db = stack.enter_context(fresh_pg_database("slapnode_lost"))
        base = Path(tempfile.mkdtemp(prefix="slapnode-lost-"))
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        proc, url, token = start_master(base / "m", db,
                                        serve_args=("--lost-after", str(LOST_AFTER)))
        stack.callback(stop_process, proc)
        yield url, token


class Poller:
    """A node that long-polls as an agent does, until told to stop."""

    def __init__(self, client):
        self.client = client
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        revision = None
        while not self.stopping.is_set():
            doc = self.client.desired_state(after=revision, wait=0.5 if revision else 0)
            revision = doc["revision"]

    def stop(self):
        self.stopping.set()
        self.thread.join(5)


def _node(admin, url, name):
    token = admin.create_enrollment_token(name, scope="public")["token"]
    node = Client(url, Client(url, retries=0).enroll(token)["credential"], retries=0)
    node.report_partitions([{"reference": "slappart0", "ipv4": "10.9.0.2", "ipv6": "fd00::2"}])
    return node


def _destroy(admin, node, title):
    """Destroy ``title`` and report it gone from ``node``'s only partition, as its agent would."""
    admin.change_instance(title, "destroyed")
    [item] = node.desired_state()["partitions"]
    node.report(instances=[{"partition": "slappart0", "instance_id": item["instance"]["id"],
                            "status": "destroyed"}])
    assert admin.show_instance(title)["status"] == "destroyed"


def _until(check, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_lost_nodes_instance_is_unreachable_then_moved_and_the_node_comes_back(quick_master):
    url, token = quick_master
    admin = Client(url, token, retries=0)
    software = f"{url}/software-releases/hello/software.cfg"
    admin.add_software(software, "hello")
    gone, alive = _node(admin, url, "gone"), _node(admin, url, "alive")
    keeper = Poller(alive)
    try:
        admin.request_instance(title="web", software=software, parameters={},
                               node={"computer": "gone"})
        admin.request_instance(title="old", software=software, parameters={},
                               node={"computer": "alive"})
        with pytest.raises(MasterError) as early:       # a node that is fine: nothing to move
            admin.request_instance(title="old", software=software, parameters={},
                                   node={"computer": "alive"}, move=True)
        assert early.value.status == 409 and "not lost" in str(early.value)
        _destroy(admin, alive, "old")

        # "gone" never polls: lost after 2 s; its instance says so, and when it was seen
        view = _until(lambda: (lambda v: v if v["status"] == "unreachable" else None)(
            admin.show_instance("web")), 10, "the instance to be unreachable")
        assert "its node gone is lost (last seen 20" in view["reason"] and "--move" in view["reason"]
        assert admin.show_computer("gone")["lost"] and not admin.show_computer("alive")["lost"]
        listed = run_cli(["node", "list"], url, token).stdout.splitlines()
        assert [line.split()[3] for line in listed if line.split()[0] in ("gone", "alive")] \
            == ["running", "lost"]                              # (sorted by name)
        # a request waits for a live node: nothing is placed on the lost one
        admin.request_instance(title="other", software=software, parameters={})
        assert admin.show_instance("other")["node"] == "alive"
        _destroy(admin, alive, "other")

        moved = admin.request_instance(title="web", software=software, parameters={},
                                       node={}, move=True)
        assert moved["node"] == "alive" and moved["status"] == "deploying"
        assert any(e["action"] == "moved" and e["detail"]["lost_node"] == "gone"
                   for e in admin.instance_history("web"))

        # "gone" comes back: it is not lost anymore, and its partition is free (its agent
        # destroys what it kept); "web" stays where it moved
        [old] = gone.desired_state()["partitions"]
        assert old["instance"] is None
        _until(lambda: not admin.show_computer("gone")["lost"], 5, "the node to be back")
        assert admin.show_instance("web")["node"] == "alive"
    finally:
        keeper.stop()


def test_destroying_an_instance_of_a_lost_node_frees_it_at_once(quick_master):
    url, token = quick_master
    admin = Client(url, token, retries=0)
    software = f"{url}/software-releases/hello/software.cfg"
    admin.add_software(software, "hello")
    _node(admin, url, "away")
    admin.request_instance(title="stuck", software=software, parameters={})
    _until(lambda: admin.show_instance("stuck")["status"] == "unreachable", 10, "unreachable")
    admin.change_instance("stuck", "destroyed")
    view = admin.show_instance("stuck")
    assert view["status"] == "destroyed" and "while its node was lost" in view["reason"]

"""The volunteer's policy on a real machine: real cgroups, real processes, no mocks.

Each test makes a parent cgroup of its own (``slapnode-<unique bridge>``), puts real
processes in it as a node puts partitions, and removes everything at the end."""

import datetime as dt
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slapnode import nodeconfig, volunteer
from slapnode import policy as policy_mod
from slapnode.deploy import cgroups

from .conftest import run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")
BURN = [sys.executable, "-c", "while True: pass"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]


class Machine:
    """A node config of the test's own, its parent cgroup and the processes it started."""

    def __init__(self, base):
        self.config = nodeconfig.NodeConfig(name="policy-test", bridge=f"snp{secrets.token_hex(4)}",
                                            state_dir=str(base / "state"), isolation="lxc")
        self.path = nodeconfig.save(self.config, base / "node.cfg")
        self.parent = cgroups.Parent(self.config)
        self.parent.ensure()
        self.processes = []

    def start(self, argv, partition=None):
        """A process; in the partitions' cgroup (as partition ``partition``) if given."""
        process = subprocess.Popen(argv)
        self.processes.append(process)
        if partition:
            self.parent.attach(partition, process.pid)
        return process

    def cpu_share(self, seconds=3.0):
        """Share of the whole machine the partitions used over ``seconds`` (%)."""
        before, started = self.parent.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        used = self.parent.cpu_seconds() - before
        return 100 * used / ((time.monotonic() - started) * (os.cpu_count() or 1))

    def cleanup(self):
        self.parent.freeze(False)
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        self.parent.remove()


@pytest.fixture
def machine(tmp_path):
    made = Machine(tmp_path)
    try:
        yield made
    finally:
        made.cleanup()
    assert not made.parent.path("freezer").exists() if not made.parent.v2 else True


def process_cpu(pid):
    with open(f"/proc/{pid}/stat") as stream:
        fields = stream.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.mark.parametrize("limit", [25, 50])
def test_partitions_together_are_held_near_the_cpu_limit(machine, limit):
    cpus = os.cpu_count() or 1
    for index in range(cpus):                       # enough burners to fill the machine
        machine.start(BURN, partition=f"part{index}")
    machine.parent.set_limits(limit, 0)
    assert machine.parent.limits()[0] == pytest.approx(limit)
    share = machine.cpu_share()
    assert limit - 7 <= share <= limit + 5, f"partitions used {share:.1f} % with a limit of {limit} %"


def test_idle_only_freezes_while_the_owner_works_and_thaws_after_the_calm(machine):
    machine.config.policy = policy_mod.Policy(run_when="idle", idle_cpu_pct=30,
                                              idle_minutes=3 / 60)     # calm: 3 s, for the test
    service = machine.start(BURN, partition="part0")    # a partition's busy service
    watch = volunteer.PolicyWatch(machine.config, machine.path)
    watch.start()
    try:
        time.sleep(1.5)
        assert not machine.parent.frozen() and watch.availability["state"] == "running"
        owner = machine.start(BURN)                     # the owner starts working
        started = time.monotonic()
        while not machine.parent.frozen():
            assert time.monotonic() - started < 2.0, "not frozen within 2 s of the owner's work"
            time.sleep(0.05)
        assert watch.availability == {"state": "frozen", "reason": "the owner is using the machine",
                                      "next_change": None, "max_instances": 0}
        ticks = process_cpu(service.pid)
        time.sleep(1.0)
        assert process_cpu(service.pid) == ticks and service.poll() is None   # frozen, not killed
        owner.kill()
        owner.wait()
        calm = time.monotonic()
        while machine.parent.frozen():
            assert time.monotonic() - calm < 3 + 2.0, "not thawed 2 s after the calm period"
            time.sleep(0.05)
        assert time.monotonic() - calm >= 2.5           # not before the calm period
        time.sleep(0.5)
        assert process_cpu(service.pid) > ticks and watch.availability["state"] == "running"
    finally:
        watch.stop()


def test_hours_freeze_outside_and_thaw_inside_with_the_tests_clock(machine):
    clock = {"now": dt.datetime(2026, 11, 23, 12, 0).astimezone()}    # a Monday noon
    machine.config.policy = policy_mod.Policy(hours="mon-fri 19:00-07:00")
    service = machine.start(SLEEP, partition="part0")
    watch = volunteer.PolicyWatch(machine.config, machine.path, now=lambda: clock["now"])
    outside = watch.step()
    assert machine.parent.frozen() and outside["state"] == "frozen"
    assert outside["reason"] == "outside the hours the owner allows (until Mon 19:00)"
    clock["now"] = clock["now"].replace(hour=19, minute=30)
    inside = watch.step()
    assert not machine.parent.frozen() and inside["state"] == "running" and service.poll() is None


def test_pause_freezes_at_once_resume_thaws_and_a_restarted_agent_keeps_both(machine):
    service = machine.start(BURN, partition="part0")
    watch = volunteer.PolicyWatch(machine.config, machine.path)
    watch.step()
    paused = run_cli(["node", "pause", "--config", str(machine.path)])
    assert paused.exit_code == 0, paused.stderr
    assert machine.parent.frozen()                      # at once: before any agent tick
    assert watch.step()["state"] == "paused"
    watch.stop()                                        # the agent is killed...
    assert machine.parent.frozen()                      # ...the partitions stay frozen
    again = volunteer.PolicyWatch(nodeconfig.load(machine.path), machine.path)
    assert again.step()["state"] == "paused" and machine.parent.frozen()
    # a policy set on the command line reaches the running agent (no restart)
    assert run_cli(["node", "policy", "set", "cpu_limit_pct=40", "--config",
                    str(machine.path)]).exit_code == 0
    again.step()
    assert machine.parent.limits()[0] == pytest.approx(40)
    assert run_cli(["node", "resume", "--config", str(machine.path)]).exit_code == 0
    assert again.step()["state"] == "running" and not machine.parent.frozen()
    assert service.poll() is None
    shown = run_cli(["node", "policy", "show", "--config", str(machine.path), "--json"])
    assert '"cpu_limit_pct": 40' in shown.stdout and '"state": "running"' in shown.stdout


def test_a_memory_limit_ends_the_biggest_process_not_the_others(machine):
    machine.parent.set_limits(100, 64)
    small = machine.start(SLEEP, partition="part0")
    hog = machine.start([sys.executable, "-c", "data = bytearray(256 * 2**20); import time; "
                                               "time.sleep(60)"], partition="part1")
    assert hog.wait(30) != 0                            # killed by the kernel (OOM in the cgroup)
    assert small.poll() is None                         # the small one lives on
    assert volunteer.read_state(machine.config) == {"paused": False, "draining": False}


def test_bad_policy_values_are_refused_and_nothing_changes(machine):
    before = machine.path.read_text()
    refused = run_cli(["node", "policy", "set", "hours=someday", "--config", str(machine.path)])
    assert refused.exit_code == 2 and "hours" in refused.stderr
    assert machine.path.read_text() == before


def _node_config(base, node, master):
    config = nodeconfig.NodeConfig(name=node.name, master=master.url, credential=node.client.token,
                                   bridge=f"snp{secrets.token_hex(4)}", state_dir=str(base / node.name))
    return nodeconfig.save(config, base / f"{node.name}.cfg")


def test_the_master_places_nowhere_the_owner_holds(master, make_node, catalog_hello, tmp_path):
    _name, token = master.new_user()
    user = master.client(token)
    held, other = make_node(1, owner=token, scope="personal"), make_node(3, owner=token, scope="personal")
    drained = run_cli(["node", "drain", "--config", str(_node_config(tmp_path, held, master))])
    assert drained.exit_code == 0, drained.stderr
    assert "draining: no new instances come here; 0 instances remain" in drained.stdout
    shown = user.show_computer(held.name)
    assert shown["availability"]["state"] == "draining"
    # asked for by name, it waits, saying why; asked for anywhere, it goes elsewhere
    waiting = user.request_instance(title="on-held", software=catalog_hello,
                                    node={"computer": held.name})
    assert waiting["status"] == "pending"
    assert waiting["reason"] == (f"waiting: computer {held.name} has room but draining: "
                                 "the owner takes no new instances")
    assert user.request_instance(title="anywhere", software=catalog_hello)["node"] != held.name
    user.request_instance(title="on-other", software=catalog_hello, node={"computer": other.name})
    # resumed: the waiting request is placed there at once
    resumed = run_cli(["node", "resume", "--config", str(_node_config(tmp_path, held, master))])
    assert resumed.exit_code == 0, resumed.stderr
    assert user.show_instance("on-held")["node"] == held.name
    # frozen by the policy: its instances say so, and a wait ends with the reason
    item = next(p for p in other.desired()["partitions"]
                if p["instance"] and p["instance"]["title"] == "on-other")
    other.client.report(availability={"state": "frozen", "reason": "the owner is using the machine"},
                        instances=[{"partition": item["reference"], "instance_id": item["instance"]["id"],
                                    "status": "frozen",
                                    "reason": "frozen: the owner is using the machine"}])
    frozen = master.client(token).call("GET", "/instances/on-other", params={"wait": 5})
    assert (frozen["status"], frozen["reason"]) == ("frozen", "frozen: the owner is using the machine")
    assert user.request_instance(title="not-now", software=catalog_hello,
                                 node={"computer": other.name})["status"] == "pending"
    # its own cap: running again, but at most one instance
    other.client.report(availability={"state": "running", "max_instances": 1})
    capped = user.show_instance("not-now")
    assert capped["status"] == "pending"
    assert "runs as many instances as its owner allows" in capped["reason"]


def test_a_running_node_freezes_its_containers_and_says_so(reachable_dir):
    """The whole chain with the real agent and LXC: pause -> the containers are frozen,
    the master shows the instance frozen with the reason; resume -> ready again, the same
    processes (nothing restarted), the files intact."""
    from slapnode.client import Client

    from .conftest import require_lxc
    from .standalone import standalone

    require_lxc()
    with standalone(reachable_dir) as running:
        running.wait_running()
        user = Client(running.url, running.token, retries=0)
        made = user.request_instance(title="frozen-hello", software="hello",
                                     parameters={"name": "Ada"})
        assert made["status"] in ("deploying", "pending")
        ready = user.call("GET", "/instances/frozen-hello", params={"wait": 60})
        assert ready["status"] == "ready", ready
        config = nodeconfig.load(running.data / "node.cfg")
        parent = cgroups.Parent(config)
        pids = [int(p) for p in (parent.path("freezer") if not parent.v2 else parent.path())
                .rglob("cgroup.procs") for p in p.read_text().split()]
        assert pids, "the partition's processes are below the parent cgroup"
        marker = next(Path(config.instance_root).glob("*/etc/supervisord.conf"), None)
        paused = run_cli(["node", "pause", "--config", str(running.data / "node.cfg")])
        assert paused.exit_code == 0, paused.stderr
        deadline = time.monotonic() + 5
        while (frozen := user.show_instance("frozen-hello"))["status"] != "frozen":
            assert time.monotonic() < deadline, frozen
            time.sleep(0.1)
        assert parent.frozen()
        assert "paused by the machine's owner" in frozen["reason"]
        resumed = run_cli(["node", "resume", "--config", str(running.data / "node.cfg")])
        assert resumed.exit_code == 0, resumed.stderr
        deadline = time.monotonic() + 15
        while user.show_instance("frozen-hello")["status"] != "ready":
            assert time.monotonic() < deadline, user.show_instance("frozen-hello")
            time.sleep(0.2)
        assert all(os.path.exists(f"/proc/{pid}") for pid in pids)    # the same processes
        assert marker is None or marker.exists()
        url = user.show_instance("frozen-hello")["connection"]["url"]
        import requests
        assert requests.get(url, timeout=5, proxies={"http": None}).text == "Hello, Ada!"


def test_without_lxc_the_partitions_processes_are_moved_under_the_policy(machine):
    """isolation = user: no container, so the policy thread moves each partition user's
    processes below the parent cgroup; the freezer then holds them as it holds containers."""
    from slapnode.format import plan, users

    machine.config.isolation = "user"
    machine.config.partitions = 1
    machine.config.ipv6_range = "fd00:5e11::/64"
    machine.config.user_prefix = f"snp{secrets.token_hex(3)}u"
    user = machine.config.partition_user(0)
    users.create_user(user, "/nonexistent", plan.PARTITION_MARK + " policy test")
    try:
        uid = __import__("pwd").getpwnam(user).pw_uid
        service = subprocess.Popen(BURN, user=uid)
        machine.processes.append(service)
        watch = volunteer.PolicyWatch(machine.config, machine.path)
        watch.step()
        with open(f"/proc/{service.pid}/cgroup") as stream:
            assert f"/{machine.parent.name}/{user}" in stream.read()
        volunteer.write_state(machine.config, paused=True)
        assert watch.step()["state"] == "paused" and machine.parent.frozen()
        ticks = process_cpu(service.pid)
        time.sleep(0.5)
        assert process_cpu(service.pid) == ticks and service.poll() is None
        volunteer.write_state(machine.config, paused=False)
        assert watch.step()["state"] == "running" and not machine.parent.frozen()
    finally:
        machine.cleanup()
        users.delete_user(user)

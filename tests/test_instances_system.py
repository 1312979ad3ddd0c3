"""Instances end to end, as root: a real master, real partition users, real
supervisord per partition, real LXC application containers (and the reduced
``user`` isolation), the hello release answering over HTTP.

Every test makes its own node (unique user prefix, bridge and range) and its
finalizer stops every process and removes every user and interface it made.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from slapnode import format as fmt
from slapnode import nodeconfig
from slapnode.agent import InstancePass
from slapnode.client import Client
from slapnode.deploy import isolation as isolation_mod
from slapnode.deploy.partition import parts_of
from slapnode.format import plan, users
from slapnode.software.supply import SoftwarePass

from .conftest import require_lxc, run_cli, slapnode_cmd, stop_group, unique_name

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="instances need root"),
    pytest.mark.parametrize("master", ["sqlite"], indirect=True),
]
ISOLATIONS = ["lxc", "user"]          # lxc: skipped (or failed in CI) where LXC is missing


@dataclass
class Node:
    config: nodeconfig.NodeConfig
    path: Path
    client: Client
    master: object
    user_client: Client

    def passes(self):
        """One software pass and one instance pass, as `node software` + `node instance`."""
        doc = self.client.desired_state()
        SoftwarePass(self.config, self.client).run(doc)
        return InstancePass(self.config, self.client).run(self.client.desired_state())

    def request(self, title, **body):
        body.setdefault("software", self.hello)
        body.setdefault("node", {"computer": self.config.name})
        return self.user_client.request_instance(title=title, **body)

    def part(self, reference):
        return parts_of(self.config)[reference]


def _remove_ours(prefix, software_user):
    for user in users.all_users():
        if (user.name.startswith(prefix) and user.gecos.startswith(plan.PARTITION_MARK)) or \
                (user.name == software_user and user.gecos.startswith(plan.SOFTWARE_MARK)):
            isolation_mod.kill_all(user.uid)
            users.delete_user(user.name)


def make_node(master, isolation, base, hello, partitions=2):
    tag = secrets.token_hex(3)
    name = unique_name("node")
    token = master.client().create_enrollment_token(name, scope="public")["token"]
    path = base / "node.cfg"
    octet = 230 + secrets.randbelow(20)
    result = run_cli(["node", "register", "--master", master.url, "--token", token, "--config",
                      str(path), "--partitions", str(partitions), "--user-prefix", f"sn{tag}u",
                      "--instance-root", str(base / "srv"), "--software-root", str(base / "soft"),
                      "--bridge", f"snb{tag}", "--ipv4-range", f"10.{octet}.{secrets.randbelow(250)}.0/24",
                      "--isolation", isolation])
    assert result.exit_code == 0, result.stderr
    config = nodeconfig.load(path)
    config.software_user, config.state_dir = f"sn{tag}s", str(base / "state")
    # These nodes live in the machine's own network: their partitions reach nothing
    # outside (tests/test_network_system.py builds a small internet of its own).
    config.outbound = "none"
    nodeconfig.save(config, path)
    client = Client(master.url, config.credential, retries=0)
    fmt.reconcile(config, client)
    master.client().supply(hello, config.name)
    _, user_token = master.new_user()
    node = Node(config, path, client, master, Client(master.url, user_token, retries=0))
    node.hello = hello
    return node


@pytest.fixture
def base(reachable_dir):
    return reachable_dir


@pytest.fixture(params=ISOLATIONS)
def node(request, master, base, catalog_hello):
    if request.param == "lxc":
        require_lxc()
    handle = make_node(master, request.param, base, catalog_hello)
    try:
        yield handle
    finally:
        _teardown(handle)


def _teardown(handle):
    config = handle.config
    try:
        isolation = isolation_mod.isolation_for(config)
        for part in parts_of(config).values():
            isolation.stop(part, graceful=False)
        fmt.reconcile(config, None, remove_all=True, force=True)
    finally:
        _remove_ours(config.user_prefix, config.software_user)
        from slapnode.format import network
        with network.open_ipr() as ipr:           # whatever happened above
            network.remove_link(ipr, config.bridge)


def get(url, timeout=2):
    return requests.get(url, timeout=timeout, proxies={"http": None})


def wait_for(check, seconds=10, step=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (requests.RequestException, OSError):
            pass
        time.sleep(step)
    return False


def test_hello_lifecycle_request_change_stop_start_destroy(node):
    node.request("hello", parameters={"name": "Ada"})
    node.passes()
    view = node.user_client.show_instance("hello")
    assert view["status"] == "ready", view["reason"]
    url = view["connection"]["url"]
    assert get(url).text == "Hello, Ada!"
    assert view["promises"] and all(p["ok"] for p in view["promises"])
    assert view["usage"]["memory_mb"] > 1 and view["usage"]["disk_mb"] > 0    # usage reported

    status = run_cli(["node", "status", "--config", str(node.path), "--json"])
    row = json.loads(status.stdout)["partitions"][0]
    assert (row["instance"], row["status"], row["services"]) == ("hello", "ready", {"httpd": row["services"]["httpd"]})
    assert row["promises"][0]["ok"]

    node.request("hello", parameters={"name": "Grace"})
    node.passes()
    assert node.user_client.show_instance("hello")["status"] == "ready"
    assert get(url).text == "Hello, Grace!"
    # the master keeps each report as history: raw samples and the hour's aggregate
    samples = node.user_client.instance_usage("hello", resolution="raw")
    assert len(samples) >= 2 and sum(s["cpu_seconds"] for s in samples) > 0
    assert node.user_client.instance_usage("hello")[-1]["samples"] == len(samples)
    if node.config.isolation == "lxc":       # the container's veth: the GET above went in
        assert sum(s["net_in_bytes"] for s in samples) > 0
        assert sum(s["net_out_bytes"] for s in samples) > 0

    node.user_client.change_instance("hello", "stopped")
    node.passes()
    assert node.user_client.show_instance("hello")["status"] == "stopped"
    with pytest.raises(requests.RequestException):
        get(url, timeout=1)
    part = node.part("slappart0")
    assert isolation_mod.processes_of(part.uid) == []           # no orphans
    assert (part.root / "srv" / "www" / "index.html").exists()  # files kept

    node.user_client.change_instance("hello", "started")
    node.passes()
    assert node.user_client.show_instance("hello")["status"] == "ready"
    assert get(url).text == "Hello, Grace!"

    node.user_client.change_instance("hello", "destroyed")
    node.passes()
    assert node.user_client.show_instance("hello")["status"] == "destroyed"
    assert isolation_mod.processes_of(part.uid) == []
    assert sorted(p.name for p in part.root.iterdir()) == ["etc", "srv", "tmp", "var"]
    assert not (part.root / "srv" / "www").exists()
    assert node.client.desired_state()["partitions"][0]["instance"] is None


def test_a_killed_service_comes_back_and_a_crash_loop_is_an_error(node):
    node.request("hello", parameters={"name": "Ada"})
    node.passes()
    part = node.part("slappart0")
    url = node.user_client.show_instance("hello")["connection"]["url"]
    server = [p for p in isolation_mod.processes_of(part.uid)
              if b"serve.py" in Path(f"/proc/{p}/cmdline").read_bytes()][0]
    os.kill(server, signal.SIGKILL)
    assert wait_for(lambda: get(url, 0.5).text == "Hello, Ada!", seconds=10)   # (timed in bench/)
    # make the service crash at once, for good
    conf = part.root / "etc" / "supervisor.d" / "httpd.conf"
    conf.write_text(conf.read_text().replace("command = ", "command = /bin/false "))
    from slapnode.deploy import supervisor
    supervisor.reload(part.root, uid=part.uid)
    assert wait_for(lambda: supervisor.programs(part.root, uid=part.uid)["httpd"][0] == "FATAL",
                    seconds=30)
    InstancePass(node.config, node.client).run(node.client.desired_state())
    view = node.user_client.show_instance("hello")
    assert view["status"] == "error" and "httpd" in view["reason"]


def test_two_partitions_cannot_reach_each_other(master, base, catalog_hello):
    require_lxc()
    node = make_node(master, "lxc", base, catalog_hello)
    try:
        node.request("a", parameters={"name": "A"})
        node.request("b", parameters={"name": "B"})
        node.passes()
        a, b = node.part("slappart0"), node.part("slappart1")
        secret = b.root / "srv" / "www" / "index.html"
        read = subprocess.run(["cat", str(secret)], user=a.uid, group=a.gid, capture_output=True)
        assert read.returncode != 0 and b"Permission denied" in read.stderr
        victim = isolation_mod.processes_of(b.uid)[0]
        kill = subprocess.run([sys.executable, "-c", f"import os; os.kill({victim}, 0)"],
                              user=a.uid, group=a.gid, capture_output=True)
        assert kill.returncode != 0 and b"PermissionError" in kill.stderr
        # inside A's container, B's address does not exist
        container = f"slapnode-{a.user}"
        bind = subprocess.run(["lxc-attach", "-n", container, "--", sys.executable, "-c",
                               f"import socket; socket.socket().bind(('{b.ipv4}', 9999))"],
                              capture_output=True)
        assert bind.returncode != 0 and b"Cannot assign requested address" in bind.stderr
        own = subprocess.run(["lxc-attach", "-n", container, "--", sys.executable, "-c",
                              f"import socket; socket.socket().bind(('{a.ipv4}', 9999))"],
                             capture_output=True)
        assert own.returncode == 0, own.stderr
        # its own pid namespace, and the node config's cgroup limits
        ps = subprocess.run(["lxc-attach", "-n", container, "--", "ps", "-e", "-o", "pid="],
                            capture_output=True, text=True).stdout.split()
        assert len(ps) < 10 and "1" in ps
        limits = cgroup_limits(isolation_mod.processes_of(a.uid)[0])
        assert limits["memory"] == node.config.memory_limit_mb * 2**20
        assert limits["pids"] == node.config.pids_limit
    finally:
        _teardown(node)


def cgroup_limits(pid):
    """Memory and pids limits of the cgroup that ``pid`` runs in (v1 or v2)."""
    limits = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":
            limits["memory"] = int(Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read_text())
        elif controllers == "pids":
            limits["pids"] = int(Path(f"/sys/fs/cgroup/pids{path}/pids.max").read_text())
        elif controllers == "" and Path(f"/sys/fs/cgroup{path}/memory.max").exists():
            limits.setdefault("memory", int(Path(f"/sys/fs/cgroup{path}/memory.max").read_text()))
            limits.setdefault("pids", int(Path(f"/sys/fs/cgroup{path}/pids.max").read_text()))
    return limits


def start_agent(node, log):
    return subprocess.Popen(slapnode_cmd("node", "run", "--config", str(node.path), "--poll-wait", "5"),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _deploying(node, reference):
    """True while the agent is in the middle of deploying ``reference`` (its local state
    marks a deployment as started, and not finished, with an empty inputs hash)."""
    try:
        state = json.loads((Path(node.config.state_dir) / "partitions.json").read_text())
    except (OSError, ValueError):
        return False
    return state.get(reference, {}).get("hash") == ""


def test_the_daemon_converges_after_being_killed_mid_deployment(node, base):
    log = open(base / "agent.log", "w")
    agent = start_agent(node, log)
    try:
        node.request("hello", parameters={"name": "Ada"})
        assert wait_for(lambda: _deploying(node, "slappart0"), seconds=60, step=0.005), \
            (base / "agent.log").read_text()[-2000:]
        os.killpg(agent.pid, signal.SIGKILL)        # in the middle of the deployment
        agent.wait()
        agent = start_agent(node, log)
        assert wait_for(lambda: node.user_client.show_instance("hello")["status"] == "ready",
                        seconds=30), (base / "agent.log").read_text()[-2000:]
        url = node.user_client.show_instance("hello")["connection"]["url"]
        assert get(url).text == "Hello, Ada!"
        # a request while the daemon runs is picked up by the long-poll
        node.request("hello", parameters={"name": "Lin"})
        assert wait_for(lambda: get(url, 0.5).text == "Hello, Lin!", seconds=15)
    finally:
        stop_group(agent)
        log.close()


def test_instances_keep_running_after_the_agent_is_killed(node, base):
    node.request("hello", parameters={"name": "Ada"})
    log = open(base / "agent.log", "w")
    agent = start_agent(node, log)
    try:
        assert wait_for(lambda: node.user_client.show_instance("hello")["status"] == "ready",
                        seconds=30)
        part = node.part("slappart0")
        before = sorted(isolation_mod.processes_of(part.uid))
    finally:
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()
        log.close()
    time.sleep(2)
    url = node.user_client.show_instance("hello")["connection"]["url"]
    assert get(url).text == "Hello, Ada!"
    assert sorted(isolation_mod.processes_of(part.uid)) == before


def test_the_agent_rides_out_a_master_that_refuses_connections(base, catalog_hello, reachable_dir):
    """The master is gone (connections refused) for longer than the agent's long-poll:
    the instance keeps serving, the agent says so once, retries with backoff, says once
    that it is back, and follows the next change."""
    from .conftest import free_port, start_master, stop_process

    port = free_port()
    data = reachable_dir / "master"
    proc, url, admin = start_master(data, port=port)
    handle = None
    try:
        master = _Master(url, admin, data)
        hello = f"{url}/software-releases/hello/software.cfg"
        master.client().add_software(hello, unique_name("hello"))
        handle = make_node(master, "user", base, hello, partitions=1)
        logfile = base / "agent.log"
        agent = subprocess.Popen(slapnode_cmd("node", "run", "--config", str(handle.path),
                                              "--poll-wait", "2", "--log-file", str(logfile)),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        try:
            handle.request("hello", parameters={"name": "Ada"})
            assert wait_for(lambda: handle.user_client.show_instance("hello")["status"] == "ready",
                            seconds=30), logfile.read_text()[-2000:]
            url_of = handle.user_client.show_instance("hello")["connection"]["url"]
            stop_process(proc)                       # connections are refused from now on
            time.sleep(10)                           # five times the agent's poll wait
            assert agent.poll() is None and get(url_of).text == "Hello, Ada!"
            text = logfile.read_text()
            assert text.count("master unreachable") == 1, text
            proc, _, _ = start_master(data, port=port)     # back, same address
            handle.request("hello", parameters={"name": "Back"})
            assert wait_for(lambda: get(url_of, 0.5).text == "Hello, Back!", seconds=90), \
                logfile.read_text()[-2000:]
            text = logfile.read_text()
            assert text.count("master unreachable") == 1 and text.count("reachable again") == 1
        finally:
            stop_group(agent)
    finally:
        if handle is not None:
            _teardown(handle)
        stop_process(proc)


@dataclass
class _Master:
    """What make_node needs of a master: its URL and an admin client."""

    url: str
    admin_token: str
    data_dir: Path

    def client(self, token=None):
        return Client(self.url, token or self.admin_token, retries=0)

    def new_user(self, admin=False):
        result = self.client().add_user(unique_name("user"), admin)
        return result["name"], result["token"]


def test_shared_instances_reach_their_host_and_get_their_own_parameters(master, base):
    sr = base / "hostsr"
    sr.mkdir()
    (sr / "instance.cfg.in").write_text("""[buildout]
parts = secret publish publish-shared
[secret]
recipe = slapnode:password
[publish]
recipe = slapnode:publish
url = http://${slap-configuration:ipv4}/
password = ${secret:passwd}
[publish-shared]
recipe = slapnode:publish
for-each-shared-instance = true
url = http://${slap-configuration:ipv4}/{parameters[path]}
who = {title}
""")
    (sr / "software.cfg").write_text("""[buildout]
parts = instance
[instance]
recipe = slapnode:template
url = ${:_profile_base_location_}/instance.cfg.in
output = ${buildout:directory}/instance.cfg
""")
    url = str(sr / "software.cfg")
    master.client().add_software(url, unique_name("hostsr"))
    node = make_node(master, "user", base, url, partitions=1)
    try:
        node.request("host", software=url)
        node.request("tenant", software=url, shared=True, parameters={"path": "a"})
        node.passes()
        host = node.user_client.show_instance("host")
        assert host["status"] == "ready", host["reason"]
        shared = node.user_client.show_instance("tenant")
        assert shared["host"] == "host"
        assert shared["connection"] == {"url": f"http://{host['ipv4']}/a", "who": "tenant"}
        password = host["connection"]["password"]
        assert len(password) >= 20
        # a redeploy (another tenant attaches) keeps the password
        node.request("tenant2", software=url, shared=True, parameters={"path": "b"})
        node.passes()
        assert node.user_client.show_instance("host")["connection"]["password"] == password
        assert node.user_client.show_instance("tenant2")["connection"]["url"].endswith("/b")
    finally:
        _teardown(node)


def _release(base, name, instance_cfg, software_extra=""):
    """A release of the test's own: its instance profile copied as is."""
    sr = base / f"{name}-{secrets.token_hex(3)}"
    sr.mkdir()
    (sr / "instance.cfg.in").write_text(instance_cfg)
    (sr / "software.cfg").write_text(f"""[buildout]
parts = {'slow ' if software_extra else ''}instance
{software_extra}
[instance]
recipe = slapnode:download
url = ${{:_profile_base_location_}}/instance.cfg.in
destination = ${{buildout:directory}}
filename = instance.cfg
""")
    return str(sr / "software.cfg")


def test_a_slow_build_does_not_hold_up_other_partitions(master, base, catalog_hello):
    slow = _release(base, "slow", "[buildout]\nparts =\n",
                    "[slow]\nrecipe = slapnode:command\ncommand = sleep 25\n")
    master.client().add_software(slow, unique_name("slow"))
    node = make_node(master, "user", base, catalog_hello, partitions=2)
    log = open(base / "agent.log", "w")
    agent = start_agent(node, log)
    try:
        node.request("slowpoke", software=slow)
        time.sleep(1)                               # its build has begun
        started = time.monotonic()
        node.request("quick", parameters={"name": "Q"})
        assert wait_for(lambda: node.user_client.show_instance("quick")["status"] == "ready",
                        seconds=20), (base / "agent.log").read_text()[-2000:]
        assert time.monotonic() - started < 20
        slowpoke = node.user_client.show_instance("slowpoke")
        assert slowpoke["status"] == "deploying" and "software release" in slowpoke["reason"]
    finally:
        stop_group(agent)
        log.close()
        _teardown(node)


def test_an_instance_answers_on_its_published_ipv6_url(node):
    node.request("hello", parameters={"name": "Six"})
    node.passes()
    view = node.user_client.show_instance("hello")
    url6 = view["connection"]["url-ipv6"]
    assert url6.startswith("http://[") and view["ipv6"] in url6
    assert wait_for(lambda: get(url6, 1).text == "Hello, Six!", seconds=15)


def test_no_token_or_parameter_value_reaches_the_logs(base, catalog_hello, reachable_dir):
    from .conftest import start_master, stop_process

    data = reachable_dir / "master"
    proc, url, admin = start_master(data, log_level="info")
    handle = None
    secret = "Sekr1t-" + secrets.token_hex(8)
    try:
        master = _Master(url, admin, data)
        hello = f"{url}/software-releases/hello/software.cfg"
        master.client().add_software(hello, unique_name("hello"))
        handle = make_node(master, "user", base, hello, partitions=1)
        logfile = base / "agent.log"
        agent = subprocess.Popen(slapnode_cmd("node", "run", "--config", str(handle.path),
                                              "--poll-wait", "2", "--log-file", str(logfile)),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        try:
            for name in (secret, secret + "2"):
                handle.request("hello", parameters={"name": name})
                assert wait_for(lambda: get(handle.user_client.show_instance("hello")
                                            ["connection"].get("url", "http://0.0.0.0:9/"),
                                            1).text == f"Hello, {name}!", seconds=30)
            handle.user_client.change_instance("hello", "destroyed")
            assert wait_for(lambda: handle.user_client.show_instance("hello")["status"] ==
                            "destroyed", seconds=30)
        finally:
            stop_group(agent)
        logs = logfile.read_text() + (data / "serve.log").read_text()
        assert "deploy -> ready" in logs                    # the logs did say things
        for value in (secret, admin, handle.user_client.token, handle.config.credential):
            assert value not in logs
    finally:
        if handle is not None:
            _teardown(handle)
        stop_process(proc)


def test_a_partition_cannot_use_more_cpu_than_its_limit(master, base):
    require_lxc()
    spin = _release(base, "spin", """[buildout]
parts = spin
[spin]
recipe = slapnode:service
command = /usr/bin/python3 -c "while True: pass"
""")
    master.client().add_software(spin, unique_name("spin"))
    node = make_node(master, "lxc", base, spin, partitions=1)
    try:
        node.config.cpu_limit_pct = 20
        nodeconfig.save(node.config, node.path)
        node.request("spin", software=spin)
        node.passes()
        part = node.part("slappart0")
        pids = [p for p in isolation_mod.processes_of(part.uid)
                if b"while True" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert pids, "the spinning service is not running"

        def cpu():
            fields = Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        before, started = cpu(), time.monotonic()
        time.sleep(4)
        share = (cpu() - before) / (time.monotonic() - started)
        assert share < 0.30, f"the partition used {share:.0%} of a CPU; its limit is 20%"
        assert share > 0.05                                  # it did run
    finally:
        _teardown(node)


def test_requesting_a_newer_version_upgrades_the_instance_in_place(node, base):
    """As SlapOS does: the node builds the new release and redeploys the same partition;
    the partition's files stay."""
    import shutil

    hello_dir = Path(__file__).resolve().parent.parent / "software-releases" / "hello"
    newer = base / f"hello-2-{secrets.token_hex(3)}"
    shutil.copytree(hello_dir, newer)
    title = node.user_client.show_software(node.hello)["title"]
    version = f"2.{secrets.randbelow(10**6)}"       # the catalog outlives this test's node
    node.master.client().add_software(str(newer / "software.cfg"), title, version=version,
                                      schema=json.loads((hello_dir / "software.cfg.json").read_text()))
    node.request("upgraded", software=node.hello, parameters={"name": "Ada"})
    node.passes()
    before = node.user_client.show_instance("upgraded")
    assert before["status"] == "ready" and before["software"] == node.hello
    kept = node.part(before["partition"]).root / "srv" / "kept-by-the-upgrade"
    kept.write_text("data")
    # the same request without --version keeps its version; with it, it moves
    again = node.request("upgraded", software=title, parameters={"name": "Ada"})
    assert again["software"] == node.hello and again["changed"] is False
    moved = node.request("upgraded", software=title, version=version, parameters={"name": "Ada"})
    assert moved["software"] == str(newer / "software.cfg") and moved["changed"] is True
    node.passes()
    after = node.user_client.show_instance("upgraded")
    assert after["status"] == "ready", after["reason"]
    assert after["partition"] == before["partition"] and kept.read_text() == "data"
    assert get(after["connection"]["url"]).text == "Hello, Ada!"
    assert "changed" in [e["action"] for e in node.user_client.instance_history("upgraded")]


def test_a_burst_of_50_requests_all_become_ready_reported_as_they_come(master, base,
                                                                       catalog_hello):
    """50 instances requested at once on a node with 50 free partitions: the agent deploys
    them in parallel within its bound, and the master hears of each as it is ready, not
    all at the end of the pass."""
    require_lxc()
    import concurrent.futures

    node = make_node(master, "lxc", base, catalog_hello, partitions=50)
    log = open(base / "agent.log", "w")
    agent = start_agent(node, log)
    try:
        titles = [f"burst{i}" for i in range(50)]
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            list(pool.map(lambda t: node.request(t, parameters={"name": t}), titles))
        seen_between = False            # some ready while others are still deploying

        def all_ready():
            nonlocal seen_between
            statuses = [v["status"] for v in node.user_client.list_instances()
                        if v["title"] in titles]
            ready = statuses.count("ready")
            seen_between |= 0 < ready < len(titles)
            assert "error" not in statuses, statuses
            return ready == len(titles)
        assert wait_for(all_ready, seconds=240, step=0.1), (base / "agent.log").read_text()[-3000:]
        assert seen_between, "every instance was reported at once, at the end of the pass"
        views = [v for v in node.user_client.list_instances() if v["title"] in titles]
        assert len({v["partition"] for v in views}) == 50
        for view in views[:5]:
            assert get(view["connection"]["url"]).text == f"Hello, {view['title']}!"
    finally:
        stop_group(agent)
        log.close()
        _teardown(node)


def test_free_partitions_are_kept_warm_and_a_request_lands_in_one(master, base, catalog_hello):
    """The agent keeps the next free partitions started (container, supervisord, warm
    deployer); a request lands in one, is deployed by its deployer (no new interpreter),
    gets its own host name, and the next free partition is warmed in its turn. The warm
    ones do not outlive the agent; the instance does."""
    require_lxc()
    node = make_node(master, "lxc", base, catalog_hello, partitions=3)
    node.config.warm_partitions = 2
    nodeconfig.save(node.config, node.path)
    parts = parts_of(node.config)
    lxc = isolation_mod.isolation_for(node.config)

    def warm(reference):
        part = parts[reference]
        return lxc.running(part) and (part.root / "var" / "run" / "deploy.sock").is_socket()

    log = open(base / "agent.log", "w")
    agent = subprocess.Popen(slapnode_cmd("node", "run", "--config", str(node.path)),
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             env={**os.environ, "SLAPNODE_TRACE": "1"})
    try:
        assert wait_for(lambda: warm("slappart0") and warm("slappart1"), seconds=30), \
            (base / "agent.log").read_text()[-2000:]
        assert not lxc.running(parts["slappart2"])
        assert isolation_mod.supervisor.programs(parts["slappart0"].root,
                                                 uid=parts["slappart0"].uid) == {}

        node.request("warm", parameters={"name": "Ada"})
        assert wait_for(lambda: node.user_client.show_instance("warm")["status"] == "ready",
                        seconds=30), (base / "agent.log").read_text()[-2000:]
        view = node.user_client.show_instance("warm")
        assert view["partition"] == "slappart0"
        assert get(view["connection"]["url"]).text == "Hello, Ada!"
        assert "slappart0 applied via deployer" in (base / "agent.log").read_text()
        assert wait_for(lambda: warm("slappart2"), seconds=30)      # the next free one
        hostname = next(p["instance"]["hostname"] for p in node.client.desired_state()["partitions"]
                        if p["reference"] == "slappart0")
        pid = subprocess.run(["lxc-info", "-n", lxc.container(parts["slappart0"]), "-p", "-H"],
                             capture_output=True, text=True, check=True).stdout.strip()
        inside = subprocess.run(["nsenter", "--target", pid, "--uts", "hostname"],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert inside == lxc.uts_name(parts["slappart0"], hostname)
        hosts = (Path(lxc.state()) / f"{lxc.container(parts['slappart0'])}.hosts").read_text()
        assert hostname in hosts.splitlines()[0]
    finally:
        stop_group(agent)
        log.close()
    try:
        assert not lxc.running(parts["slappart1"]) and not lxc.running(parts["slappart2"])
        assert get(node.user_client.show_instance("warm")["connection"]["url"]).text == "Hello, Ada!"
    finally:
        _teardown(node)


def test_with_no_warm_partitions_free_ones_run_nothing(master, base, catalog_hello):
    node = make_node(master, "user", base, catalog_hello, partitions=2)
    node.config.warm_partitions = 0
    nodeconfig.save(node.config, node.path)
    log = open(base / "agent.log", "w")
    agent = start_agent(node, log)
    try:
        node.request("cold", parameters={"name": "Ada"})
        assert wait_for(lambda: node.user_client.show_instance("cold")["status"] == "ready",
                        seconds=30), (base / "agent.log").read_text()[-2000:]
        time.sleep(1)
        assert isolation_mod.processes_of(node.part("slappart1").uid) == []
    finally:
        stop_group(agent)
        log.close()
        _teardown(node)

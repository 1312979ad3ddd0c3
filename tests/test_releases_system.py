"""The shipped real-workload releases, end to end on a real node: redis (Debian's
redis-server through the deb recipe) and the BOINC client; condor's rendered
configuration. As root."""

import json
import os
import subprocess
from pathlib import Path

import pytest


from .conftest import require_lxc, unique_name
from .test_instances_system import _teardown
from .test_instances_system import make_node as _make_node

ROOT = Path(__file__).resolve().parent.parent
RELEASES = ROOT / "software-releases"
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="instances need root"),
    pytest.mark.parametrize("master", ["sqlite"], indirect=True),
]
ISOLATION = "lxc"           # the default isolation; where LXC is missing: skipped, or failed in CI


def make_node(*args, **kwargs):
    require_lxc()
    return _make_node(*args, **kwargs)


@pytest.fixture
def base(reachable_dir):
    return reachable_dir


def catalog(master, name):
    url = f"{master.url}/software-releases/{name}/software.cfg"
    client = master.client()
    if url not in {s["url"] for s in client.list_software()}:
        schema = json.loads((RELEASES / name / "software.cfg.json").read_text())
        client.add_software(url, unique_name(name), schema=schema)
    return url


@pytest.fixture
def redis_node(master, base):
    node = make_node(master, ISOLATION, base, catalog(master, "redis"), partitions=2)
    try:
        yield node
    finally:
        _teardown(node)


def redis_cli(node, view, *args, password=None):
    conn = view["connection"]
    env = {"PATH": "/usr/bin:/bin"}         # the published redis-cli runs as it is
    cmd = [conn["redis_cli"], "-h", conn["redis_ip"], "-p", conn["redis_port"]]
    if password:
        cmd += ["--no-auth-warning", "-a", password]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=10)


def test_redis_set_get_password_and_persistence(redis_node):
    node = redis_node
    node.request("cache", parameters={"persistence": "rdb"})
    node.passes()
    view = node.user_client.show_instance("cache")
    assert view["status"] == "ready", view["reason"]
    assert view["connection"]["redis_uses_password"] == "false"
    assert redis_cli(node, view, "SET", "k", "v").stdout.strip() == "OK"
    assert redis_cli(node, view, "GET", "k").stdout.strip() == "v"
    # TLS on 6380 with the partition's certificate, verified by the instance's DNS name
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(node.master.data_dir / "tls" / "ca.pem"))

    def tls_ping():
        with socket.create_connection((view["connection"]["redis_ip"], 6380), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=view["connection"]["redis_hostname"]) as tls:
            tls.sendall(b"PING\r\n")
            assert tls.recv(64) == b"+PONG\r\n"
            return tls.getpeercert()["serialNumber"]
    first = tls_ping()
    # renewed (as the agent renews it): redis takes the new certificate without a restart
    import time

    from slapnode.deploy.certificate import renew
    from slapnode.deploy.partition import parts_of

    part = parts_of(node.config)[view["partition"]]
    server = subprocess.run(["pgrep", "-u", str(part.uid), "-f", "redis-server"],
                            capture_output=True, text=True).stdout.split()
    renew(node.client, part, next(p["instance"]["id"] for p in node.client.desired_state()["partitions"]
                                  if p["reference"] == part.reference))
    deadline = time.monotonic() + 20
    while tls_ping() == first:
        assert time.monotonic() < deadline, "redis kept the old certificate"
        time.sleep(0.5)
    assert subprocess.run(["pgrep", "-u", str(part.uid), "-f", "redis-server"],
                          capture_output=True, text=True).stdout.split() == server

    node.user_client.change_instance("cache", "stopped")
    node.passes()
    node.user_client.change_instance("cache", "started")
    node.passes()
    view = node.user_client.show_instance("cache")
    assert view["status"] == "ready", view["reason"]
    assert redis_cli(node, view, "GET", "k").stdout.strip() == "v"      # kept across stop/start

    node.request("cache", parameters={"persistence": "rdb", "use_passwd": "true"})
    node.passes()
    view = node.user_client.show_instance("cache")
    assert view["connection"]["redis_uses_password"] == "true"
    refused = redis_cli(node, view, "GET", "k")
    assert "NOAUTH" in refused.stdout + refused.stderr
    allowed = redis_cli(node, view, "GET", "k", password=view["connection"]["redis_passwd"])
    assert allowed.stdout.strip() == "v"


def test_bad_redis_parameters_are_refused_by_the_master(redis_node):
    from slapnode.errors import MasterError

    for params, field in (({"maxmemory-mb": "0"}, "maxmemory-mb"),
                          ({"persistence": "sometimes"}, "persistence"),
                          ({"colour": "red"}, "colour")):
        with pytest.raises(MasterError) as info:
            redis_node.request("bad", parameters=params)
        assert info.value.status == 422 and field in str(info.value)
    assert redis_node.client.desired_state()["partitions"][0]["instance"] is None


def settle(node, title, seconds=60):
    """Passes until the instance is no longer deploying (the daemon's health checks do this)."""
    import time

    from slapnode.agent import InstancePass

    deadline = time.monotonic() + seconds
    view = node.user_client.show_instance(title)
    while view["status"] == "deploying" and time.monotonic() < deadline:
        time.sleep(0.5)
        InstancePass(node.config, node.client).run(node.client.desired_state())
        view = node.user_client.show_instance(title)
    return view


def boinccmd(node, view, *args):
    conn = view["connection"]
    env = {"PATH": "/usr/bin:/bin"}         # the published boinccmd runs as it is
    return subprocess.run([conn["boinccmd"], "--host", f"{conn['remote_host']}:{conn['rpc_port']}",
                           "--passwd", conn["rpc_passwd"], *args],
                          capture_output=True, text=True, env=env, timeout=20)


def test_boinc_client_answers_its_gui_rpc_and_shows_an_offline_attach(master, base):
    node = make_node(master, ISOLATION, base, catalog(master, "boinc-client"), partitions=1)
    try:
        node.request("worker", parameters={"max-ncpus-pct": "50", "run-only-when-idle": "true"})
        node.passes()
        view = settle(node, "worker")
        assert view["status"] == "ready", view["reason"]
        info = boinccmd(node, view, "--get_host_info")
        assert info.returncode == 0 and "#CPUS:" in info.stdout, info.stdout + info.stderr
        prefs = (node.part("slappart0").root / "srv" / "boinc" / "global_prefs_override.xml").read_text()
        assert "<max_ncpus_pct>50.0</max_ncpus_pct>" in prefs
        assert "<run_if_user_active>0</run_if_user_active>" in prefs
        assert "<suspend_cpu_usage>0.0</suspend_cpu_usage>" in prefs     # the node's policy decides
        wrong = subprocess.run([view["connection"]["boinccmd"], "--host",
                                f"{view['connection']['remote_host']}:31416", "--passwd", "wrong",
                                "--get_project_status"], capture_output=True, text=True, timeout=20,
                               env={"PATH": "/usr/bin:/bin"})
        assert "Authorization failure" in wrong.stdout + wrong.stderr

        node.request("worker", parameters={"boinc-project-url": "http://boinc.example.invalid/project/",
                                           "boinc-account-key": "0123abcd"})
        node.passes()
        view = settle(node, "worker")
        assert view["status"] == "ready", view["reason"]
        assert view["connection"]["boinc_project_url"] == "http://boinc.example.invalid/project/"
        status = boinccmd(node, view, "--get_project_status")
        assert status.returncode == 0, status.stderr
        messages = boinccmd(node, view, "--get_messages")
        assert "boinc.example.invalid" in status.stdout + messages.stdout
    finally:
        _teardown(node)


def in_partition(node, part, command, timeout=60):
    """Run ``command`` as the partition user inside its container, where its services run."""
    return subprocess.run(["lxc-attach", "-n", f"slapnode-{part.user}", "-u", str(part.uid),
                           "-g", str(part.gid), "--clear-env", "--", "/bin/sh", "-c",
                           f"cd {part.root} && {command}"],
                          capture_output=True, text=True, timeout=timeout)


JOB = """executable = /bin/sh
arguments = "-c 'echo hello from `hostname`'"
transfer_executable = false
output = {out}
error = {out}.err
log = {out}.log
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
queue
"""


def submit_and_wait(node, part, view, name, seconds=120):
    """condor_submit through the published launcher, then the job's output."""
    import time

    jobs = part.root / "srv" / "jobs"
    made = in_partition(node, part, f"mkdir -p {jobs} && cat > {jobs}/{name}.sub <<'EOF'\n"
                        + JOB.format(out=f"{jobs}/{name}.out") + "EOF")
    assert made.returncode == 0, made.stderr
    submitted = in_partition(node, part, f"{view['connection']['condor_submit']} {jobs}/{name}.sub")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    out = jobs / f"{name}.out"
    deadline = time.monotonic() + seconds
    while not (out.exists() and out.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert out.exists() and out.read_text().startswith("hello from "), \
        in_partition(node, part, f"{view['connection']['condor_bin']}/condor_q -better-analyze").stdout[-2000:]
    return out.read_text().strip()


def condor_logs(part, lines=15):
    """The tail of a partition's HTCondor daemon logs, for a failure's message."""
    text = []
    for log in sorted((part.root / "srv" / "condor" / "log").glob("*Log")):
        text.append(f"== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(text)


def condor(node, part, view, tool, *args):
    quoted = " ".join(f"'{a}'" for a in args)
    return in_partition(node, part, f"{view['connection']['condor_bin']}/{tool} {quoted}")


def test_condor_pools_run_jobs_in_partitions_of_one_node(master, base):
    """From Debian 13's packages, relocated: a personal pool runs a job; a manager and
    a worker in two partitions make a pool whose job runs on the worker; a partition
    that is not in the pool cannot submit to it; a destroyed worker leaves the pool and
    a destroyed manager stops cleanly."""
    import time

    from slapnode.software.supply import SoftwarePass

    url = catalog(master, "condor")
    node = make_node(master, ISOLATION, base, url, partitions=3)
    try:
        result = SoftwarePass(node.config, node.client).ensure(url)
        assert result.status == "available", f"the condor release failed to build: {result.how}"

        node.request("solo", parameters={"condor-role": "personal"})
        node.passes()
        solo = settle(node, "solo", seconds=120)
        assert solo["status"] == "ready", solo["reason"]
        solo_part = node.part(solo["partition"])
        assert submit_and_wait(node, solo_part, solo, "alone").startswith("hello from")

        node.request("pool", type="manager", parameters={"condor-collector-name": "grid1"})
        node.passes()
        manager = settle(node, "pool", seconds=120)
        assert manager["status"] == "ready", manager["reason"]
        conn = manager["connection"]
        assert conn["condor_instance_type"] == "manager" and conn["condor_token"].count(".") == 2
        node.request("w1", type="worker", parameters={"condor-host": conn["condor_host"],
                                                      "condor-token": conn["condor_token"],
                                                      "condor-collector-name": "grid1"})
        node.passes()
        worker = settle(node, "w1", seconds=120)
        assert worker["status"] == "ready", (worker["reason"], condor_logs(node.part(worker["partition"])))
        manager_part, worker_part = node.part(manager["partition"]), node.part(worker["partition"])
        slots = condor(node, manager_part, manager, "condor_status", "-af", "Name", "SlapnodePartition")
        assert slots.returncode == 0, slots.stderr
        assert f"{worker_part.user}@{node.config.name}" in slots.stdout, slots.stdout
        machines = {line.split()[0].split("@", 1)[1] for line in slots.stdout.splitlines()
                    if line.strip()}

        output = submit_and_wait(node, manager_part, manager, "pooled")
        history = condor(node, manager_part, manager, "condor_history", "-af", "LastRemoteHost")
        # the job ran in a slot of the worker's (slot1_1@ of the partitionable slot1@)
        assert history.stdout.strip().split("@", 1)[1] in machines, (history.stdout, machines)
        assert output == f"hello from {history.stdout.strip().split('@', 1)[1]}"

        # an unrelated partition (the personal pool's, with a token of its own pool)
        # cannot submit to the manager's schedd
        intruder = in_partition(node, solo_part, f"{solo['connection']['condor_submit']} "
                                f"-pool '{conn['condor_host']}:9618' -remote "
                                f"\"$({solo['connection']['condor_bin']}/condor_status -pool "
                                f"'{conn['condor_host']}:9618' -schedd -af Name | head -1)\" "
                                f"{solo_part.root}/srv/jobs/alone.sub")
        assert intruder.returncode != 0, intruder.stdout
        queue = condor(node, manager_part, manager, "condor_q", "-allusers", "-af", "Owner")
        assert solo_part.user not in queue.stdout

        node.user_client.change_instance("w1", "destroyed")
        node.passes()
        deadline = time.monotonic() + 10        # one update interval (5 s) and some
        while time.monotonic() < deadline:
            slots = condor(node, manager_part, manager, "condor_status", "-af", "SlapnodePartition")
            if worker_part.user not in slots.stdout:
                break
            time.sleep(0.5)
        assert worker_part.user not in slots.stdout, slots.stdout

        node.user_client.change_instance("pool", "destroyed")
        node.passes()
        left = subprocess.run(["pgrep", "-u", str(manager_part.uid)], capture_output=True, text=True)
        assert left.stdout.strip() == "", "condor processes left after the manager was destroyed"
    finally:
        _teardown(node)

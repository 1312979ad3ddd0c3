"""The shipped real-workload releases, end to end on a real node: redis (Debian's
redis-server through the deb recipe) and the BOINC client; condor's rendered
configuration. As root."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from slapnode.software import software_dir

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
    sr = software_dir(node.config.software_root, node.hello)
    env = {"LD_LIBRARY_PATH": f"{sr}/parts/redis/usr/lib/x86_64-linux-gnu", "PATH": "/usr/bin:/bin"}
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
    sr = software_dir(node.config.software_root, node.hello)
    env = {"LD_LIBRARY_PATH": f"{sr}/parts/boinc/usr/lib/x86_64-linux-gnu", "PATH": "/usr/bin:/bin"}
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
        wrong = subprocess.run([view["connection"]["boinccmd"], "--host",
                                f"{view['connection']['remote_host']}:31416", "--passwd", "wrong",
                                "--get_project_status"], capture_output=True, text=True, timeout=20,
                               env={"LD_LIBRARY_PATH": str(software_dir(node.config.software_root, node.hello))
                                    + "/parts/boinc/usr/lib/x86_64-linux-gnu"})
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


def in_partition(node, part, command, env):
    """Run ``command`` as the partition user where its services run (its container)."""
    if node.config.isolation == "lxc":
        return subprocess.run(["lxc-attach", "-n", f"slapnode-{part.user}", "--", "env",
                               *[f"{k}={v}" for k, v in env.items()], *command],
                              capture_output=True, text=True, timeout=60, cwd=part.root)
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=part.root,
                          user=part.uid, group=part.gid, env={"PATH": "/usr/bin:/bin", **env})


def test_condor_pool_runs_a_submitted_job(master, base):
    """Manager and worker on one node; a job submitted with condor_submit runs and its
    output comes back. Skipped, saying why, where HTCondor's daemons cannot be obtained."""
    import time

    url = catalog(master, "condor")
    node = make_node(master, ISOLATION, base, url, partitions=2)
    try:
        from slapnode.software.supply import SoftwarePass

        result = SoftwarePass(node.config, node.client).ensure(url)
        if result.status != "available" and result.how.startswith("cannot download "):
            pytest.skip(f"HTCondor's daemons cannot be downloaded here: {result.how[:200]}")
        assert result.status == "available", f"the condor release failed to build: {result.how}"
        node.request("pool", type="manager")
        node.passes()
        manager = settle(node, "pool", seconds=120)
        assert manager["status"] == "ready", manager["reason"]
        host = manager["connection"]["condor_host"]
        node.request("w1", type="worker", parameters={"condor-host": host})
        node.passes()
        worker = settle(node, "w1", seconds=120)
        assert worker["status"] == "ready", worker["reason"]
        assert worker["connection"]["condor_instance_type"] == "worker"
        part = node.part(manager["partition"])
        job = part.root / "srv" / "job.sub"
        job.write_text(f"executable = /bin/echo\narguments = hello from condor\n"
                       f"output = {part.root}/srv/job.out\nerror = {part.root}/srv/job.err\n"
                       f"log = {part.root}/srv/job.log\nshould_transfer_files = YES\n"
                       "when_to_transfer_output = ON_EXIT\nqueue\n")
        os.chown(job, part.uid, part.gid)
        sr = software_dir(node.config.software_root, url)
        env = {"CONDOR_CONFIG": str(part.root / "etc" / "condor_config"),
               "PATH": f"{sr}/parts/condor/bin:/usr/bin:/bin"}
        submitted = in_partition(node, part, ["condor_submit", str(job)], env)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        out = part.root / "srv" / "job.out"
        deadline = time.monotonic() + 300
        while not (out.exists() and out.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(2)
        assert out.read_text().strip() == "hello from condor"
    finally:
        _teardown(node)

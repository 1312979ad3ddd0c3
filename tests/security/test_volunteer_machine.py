"""The volunteer's machine: a release that keeps failing to build makes the daemon
neither spin nor fill the disk, and its instances say why and when the next try is;
each node keeps its own state; a set-up the unprivileged users cannot reach is
refused before anything changes, saying what to do; the daemon's log is bounded."""

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from slapnode import log as log_mod
from slapnode import nodeconfig
from slapnode.agent import InstancePass
from slapnode.format import reach
from slapnode.software.supply import SoftwarePass

from ..conftest import run_cli, slapnode_cmd, stop_group, unique_name
from ..test_instances_system import _teardown, make_node

sqlite_only = pytest.mark.parametrize("master", ["sqlite"], indirect=True)

BROKEN = """[buildout]
parts = broken
[broken]
recipe = slapnode:command
command = echo 'the compiler is missing' >&2; exit 3
"""


def _cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@sqlite_only
def test_a_failing_build_neither_spins_nor_floods_and_its_instance_says_why(master, base):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    sr = base / "broken"
    sr.mkdir()
    (sr / "software.cfg").write_text(BROKEN)
    url = str(sr / "software.cfg")
    master.client().add_software(url, unique_name("broken"))
    node = make_node(master, "user", base, url, partitions=1)
    logfile = base / "agent.log"
    agent = subprocess.Popen(slapnode_cmd("node", "run", "--config", str(node.path),
                                          "--poll-wait", "5", "--log-file", str(logfile)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        node.request("w", software=url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            view = node.user_client.show_instance("w")
            if view["status"] == "error":
                break
            time.sleep(0.2)
        assert view["status"] == "error", view
        assert "failed to build" in view["reason"] and "the compiler is missing" in view["reason"]
        assert "next try at" in view["reason"]
        cpu_before = _cpu_seconds(agent.pid)
        lines_before = len(logfile.read_text().splitlines())
        time.sleep(8)                   # the build is in backoff: nothing can change
        assert _cpu_seconds(agent.pid) - cpu_before < 1.0       # it sleeps, it does not spin
        assert len(logfile.read_text().splitlines()) - lines_before <= 2     # nor talks
        # the release is mended; the next try (here forced) builds it and the instance goes on
        (sr / "instance.cfg").write_text("[buildout]\nparts =\n")
        (sr / "software.cfg").write_text("""[buildout]
parts = instance
[instance]
recipe = slapnode:download
url = ${:_profile_base_location_}/instance.cfg
destination = ${buildout:directory}
""")
    finally:
        stop_group(agent)
    try:
        doc = node.client.desired_state()
        SoftwarePass(node.config, node.client).run(doc, force=True)
        InstancePass(node.config, node.client).run(node.client.desired_state())
        assert node.user_client.show_instance("w")["status"] == "ready"
    finally:
        _teardown(node)


def test_each_node_config_has_its_own_state_directory(tmp_path):
    assert nodeconfig.default_state_dir(nodeconfig.DEFAULT_PATH) == "/var/lib/slapnode"
    a = nodeconfig.default_state_dir(tmp_path / "node-a.cfg")
    b = nodeconfig.default_state_dir(tmp_path / "node-b.cfg")
    assert a != b and a != "/var/lib/slapnode" and a.startswith(str(tmp_path))
    config = nodeconfig.NodeConfig(master="http://m", credential="snn_x")
    nodeconfig.save(config, tmp_path / "node-a.cfg")
    assert nodeconfig.load(tmp_path / "node-a.cfg").state_dir == a


@sqlite_only
def test_a_root_the_users_cannot_reach_is_refused_before_the_token_is_spent(master, base):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tmp_path = base
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    name = unique_name("node")
    token = master.client().create_enrollment_token(name, scope="public")["token"]
    result = run_cli(["node", "register", "--master", master.url, "--token", token, "--config",
                      str(tmp_path / "n.cfg"), "--software-root", str(hidden / "soft"),
                      "--isolation", "user"])
    assert result.exit_code == 2 and f"chmod o+x {hidden}" in result.stderr
    assert not (tmp_path / "n.cfg").exists()
    os.chmod(hidden, 0o755)             # mended: the same token still works
    result = run_cli(["node", "register", "--master", master.url, "--token", token, "--config",
                      str(tmp_path / "n.cfg"), "--software-root", str(hidden / "soft"),
                      "--isolation", "user"])
    assert result.exit_code == 0, result.stderr


def test_an_interpreter_under_a_private_directory_is_explained():
    modes = {"/": 0o755, "/root": 0o700, "/root/venv": 0o755, "/root/venv/bin": 0o755}

    class Stat:
        def __init__(self, mode):
            self.st_mode = stat.S_IFDIR | mode

    def fake(path):
        if str(path) not in modes:
            raise FileNotFoundError(path)
        return Stat(modes[str(path)])
    assert reach.blocking_dir("/root/venv/bin/python", fake) == (Path("/root"), 0o700)
    assert reach.blocking_dir("/srv/slapnode", fake) is None


def test_the_daemon_log_is_rotated_at_its_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(log_mod, "MAX_BYTES", 2000)
    say = log_mod.sayer(tmp_path / "agent.log")
    for i in range(500):
        say(f"line {i} \x1b[31m" + "x" * 40)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["agent.log", "agent.log.1", "agent.log.2"]
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 3 * 2200
    assert "\x1b" not in (tmp_path / "agent.log").read_text()

"""How a partition's supervisord runs: in an LXC application container, or as
the partition user directly. The one security boundary of running instances.

With ``lxc``: ``lxc-execute`` with the partition user as init uid and gid, a
network namespace holding only the partition's addresses (a veth on the node
bridge), its own pid namespace, and cgroup limits for memory, CPU and pids
from the node config. Stopping is ``lxc-stop --kill``: every process of the
container goes, grandchildren included. With ``user``: supervisord runs as
the partition user in its own session; stopping shuts it down and then kills
whatever still runs with the partition's uid.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import nodeconfig
from ..errors import SlapnodeError
from ..format.users import user_processes
from . import supervisor

SUPERVISORD = [sys.executable, "-m", "supervisor.supervisord"]


processes_of = user_processes      # (re-exported: tests and benchmarks use it here)


def kill_all(uid, wait=5.0):
    """SIGKILL every process running as ``uid``; wait until they are gone."""
    deadline = time.monotonic() + wait
    while True:
        pids = processes_of(uid)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _running_with(marker):
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as stream:
                    if marker in stream.read().replace(b"\0", b" "):
                        return True
            except OSError:
                continue
    return False


def spawn_detached(cmd, **kwargs):
    """Start ``cmd`` so that it outlives us and is never our zombie: a shell
    starts it in the background and exits at once, leaving it to init."""
    shell = subprocess.Popen(["/bin/sh", "-c", '"$@" &', "sh", *map(str, cmd)], **kwargs)
    shell.wait()


def _env(root):
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(root), "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1"}


class UserIsolation:
    name = "user"

    def __init__(self, config):
        self.config = config

    def start(self, part):
        log = open(Path(part.root) / "var" / "log" / "supervisord.out", "ab")
        spawn_detached(SUPERVISORD + ["-c", str(supervisor.paths(part.root)["conf"])],
                       user=part.uid, group=part.gid, extra_groups=[], cwd=part.root,
                       env=_env(part.root), stdin=subprocess.DEVNULL, stdout=log,
                       stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def stop(self, part, graceful=True):
        if graceful:        # services get their stop signal and stop-wait first
            supervisor.shutdown(part.root)
            deadline = time.monotonic() + 10
            while supervisor.alive(part.root) and time.monotonic() < deadline:
                time.sleep(0.05)
        kill_all(part.uid)


def cgroup_v2():
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


class LxcIsolation:
    name = "lxc"

    def __init__(self, config):
        self.config = config
        if not shutil.which("lxc-execute"):
            raise SlapnodeError("isolation = lxc but LXC is not installed (apt-get install lxc); "
                                "or set isolation = user in the node config")

    def container(self, part):
        return f"slapnode-{part.user}"

    def config_path(self, part):
        return Path(self.config.state_dir) / "lxc" / f"{self.container(part)}.conf"

    def render(self, part):
        """The container's configuration (pure apart from reading the cgroup layout)."""
        c = self.config
        v6 = c.ipv6_network
        lines = [
            f"lxc.uts.name = {part.reference}",
            f"lxc.init.uid = {part.uid}",
            f"lxc.init.gid = {part.gid}",
            "lxc.console.path = none",
            "lxc.tty.max = 0",
            "lxc.pty.max = 0",
            "lxc.mount.auto = proc:mixed sys:ro cgroup:mixed",
            "lxc.apparmor.profile = unconfined",
            # bind the IPv6 address at once, while duplicate address detection runs
            "lxc.sysctl.net.ipv6.ip_nonlocal_bind = 1",
            "lxc.net.0.type = veth",
            f"lxc.net.0.link = {c.bridge}",
            "lxc.net.0.flags = up",
            f"lxc.net.0.veth.pair = sv{part.uid}",
            f"lxc.net.0.ipv4.address = {part.ipv4}/{c.ipv4_network.prefixlen}",
            f"lxc.net.0.ipv4.gateway = {nodeconfig.gateway_v4(c)}",
            f"lxc.net.0.ipv6.address = {part.ipv6}/{v6.prefixlen if c.ipv6_source != 'global' else 128}",
            f"lxc.net.0.ipv6.gateway = {nodeconfig.gateway_v6(c) if c.ipv6_source != 'global' else 'auto'}",
        ]
        # The partition knows its own name, and name lookups fail at once instead of
        # waiting for a name server the partition cannot reach (no outbound network).
        state = Path(c.state_dir) / "lxc"
        lines += [
            f"lxc.mount.entry = {state / (self.container(part) + '.hosts')} etc/hosts none bind,ro,create=file 0 0",
            f"lxc.mount.entry = {state / 'resolv.conf'} etc/resolv.conf none bind,ro,create=file 0 0",
        ]
        memory = c.memory_limit_mb * 1024 * 1024
        period = 100000
        quota = int(period * c.cpu_limit_pct / 100)
        if cgroup_v2():
            lines += [f"lxc.cgroup2.memory.max = {memory}", f"lxc.cgroup2.pids.max = {c.pids_limit}",
                      f"lxc.cgroup2.cpu.max = {quota} {period}"]
        else:
            lines += [f"lxc.cgroup.memory.limit_in_bytes = {memory}",
                      f"lxc.cgroup.pids.max = {c.pids_limit}",
                      f"lxc.cgroup.cpu.cfs_period_us = {period}",
                      f"lxc.cgroup.cpu.cfs_quota_us = {quota}"]
        return "\n".join(lines) + "\n"

    def start(self, part):
        path = self.config_path(part)
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / f"{self.container(part)}.hosts").write_text(
            f"127.0.0.1 localhost\n::1 localhost\n{part.ipv4} {part.reference}\n"
            f"{part.ipv6} {part.reference}\n")
        (path.parent / "resolv.conf").write_text(
            "# slapnode partitions have no name server: lookups fail at once\n"
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        path.write_text(self.render(part))
        log = Path(part.root) / "var" / "log" / "container.log"
        out = open(Path(self.config.state_dir) / "lxc" / f"{self.container(part)}.out", "ab")
        spawn_detached(["lxc-execute", "-n", self.container(part), "-f", str(path),
                        "-o", str(log), "-l", "WARN", "--",
                        *SUPERVISORD, "-c", str(supervisor.paths(part.root)["conf"])],
                       cwd=part.root, env=_env(part.root), stdin=subprocess.DEVNULL,
                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def stop(self, part, graceful=True):
        if graceful:
            supervisor.stop_all(part.root)
        subprocess.run(["lxc-stop", "-n", self.container(part), "--kill"],
                       capture_output=True, timeout=30)
        kill_all(part.uid)
        marker = f" {self.container(part)} ".encode()
        deadline = time.monotonic() + 5         # lxc-execute leaves once its container died
        while time.monotonic() < deadline and _running_with(marker):
            time.sleep(0.02)


def isolation_for(config):
    return LxcIsolation(config) if config.isolation == "lxc" else UserIsolation(config)

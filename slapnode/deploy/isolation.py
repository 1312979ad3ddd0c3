"""Where a partition's code runs: in an LXC application container, or as the
partition user directly. The one security boundary of running instances.

With ``lxc``: each partition busy with an instance has a container
(``lxc-execute``, a placeholder process under ``lxc-init`` as its init, uid
and gid of the partition user) whose network namespace holds only the
partition's addresses (a veth on the node bridge), with its own pid and mount
namespaces, cgroup limits for memory, CPU and pids from the node config, and
``no_new_privs`` (no setuid program can raise a partition's rights). All the
partition's code enters that container with ``lxc-attach`` as the partition
user: the deployment of its instance profile, its supervisord and services,
its promises (``run_inside``); a cold container's supervisord is forked into it by
the agent's zygote instead (``deploy/zygote.py``: the same entry, without a new
interpreter). Stopping is ``lxc-stop --kill``: every process
of the container goes, grandchildren included.

With ``user``: the same code runs as the partition user in its own session,
in the host's namespaces (docs/security.md says what that cannot protect);
stopping shuts supervisord down and then kills whatever runs with the
partition's uid.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import nodeconfig, proc
from ..errors import SlapnodeError
from ..format.users import user_processes
from . import cgroups, supervisor, zygote

INSIDE = [sys.executable, "-m", "slapnode.deploy.inside"]
SUPERVISORD = [sys.executable, "-m", "supervisor.supervisord"]
ANSWER_CAP = 2 << 20            # bytes of answer read from the partition side
LOG_CAP = 1 << 20               # the container's own log is cut back beyond this

processes_of = user_processes      # (re-exported: tests and benchmarks use it here)
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
                         r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def veth_name(uid):
    """The host side of a partition container's veth (a port of the node's bridge)."""
    return f"sv{uid}"


def mac_address(bridge, ipv4):
    """The container's MAC: the same at every start of the partition (locally
    administered, a byte of the bridge's name, then the partition's IPv4 address).
    With a new random one at each start, a partition started again (destroyed and
    given out, or warmed again) was unreachable from the node for seconds: the
    host's neighbour entry still named the old MAC. Pure."""
    import ipaddress
    import zlib

    octets = ipaddress.IPv4Address(ipv4).packed
    return ":".join(f"{b:02x}" for b in (0x02, zlib.crc32(bridge.encode()) & 0xFF, *octets))


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


def _root_process_with(marker):
    """A process of root's whose command line holds ``marker`` (partition users
    cannot fake one: their processes are not root's)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid != 0:
                    continue
                with open(f"/proc/{entry.name}/cmdline", "rb") as stream:
                    if marker in stream.read().replace(b"\0", b" "):
                        return True
            except OSError:
                continue
    return False


def _in_cgroup(pid, container):
    """Whether process ``pid`` lives in the cgroup lxc made for ``container``."""
    try:
        with open(f"/proc/{pid}/cgroup") as stream:
            return any(line.rstrip("\n").split("/")[-1] == container or
                       f"/{container}/" in line for line in stream)
    except OSError:
        return False


def _services_alive(mark):
    """Whether the container's supervisord runs or starts, as root's mark says: empty,
    it is the container's first process (the container lives as long as it does);
    else the pid and start time of the one the zygote forked into it."""
    try:
        text = mark.read_text().split()
    except OSError:
        return False
    if not text:
        return True
    try:
        pid, started = int(text[0]), int(text[1])
    except (ValueError, IndexError):
        return False
    return zygote.started(pid) == started


def answer_of(result, what):
    """The partition side's JSON answer, or SlapnodeError saying why there is none."""
    if result.timed_out:
        raise SlapnodeError(f"{what} did not finish in time")
    if result.returncode != 0 or result.truncated:
        reason = ("its answer was too large" if result.truncated
                  else result.last_error_line(f"exit code {result.returncode}"))
        raise SlapnodeError(f"{what} failed: {reason}")
    try:
        answer = json.loads(result.stdout, parse_constant=_refuse_constant)
    except ValueError:
        raise SlapnodeError(f"{what} failed: its answer is not JSON") from None
    if not isinstance(answer, dict):
        raise SlapnodeError(f"{what} failed: its answer is not a JSON object")
    return answer


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number")


class UserIsolation:
    name = "user"

    def __init__(self, config):
        self.config = config

    def running(self, part):
        return supervisor.alive(part.root, uid=part.uid)

    def ensure_running(self, part, services=False, hostname=None, zone=""):
        """With ``services``, the partition's supervisord (started if it does not
        answer). True when supervisord runs or is starting. (Partitions share the
        machine's own resolver and host name: there is no container to name.)"""
        if not services:
            return False
        if supervisor.alive(part.root, uid=part.uid):
            return True
        proc.spawn_detached(SUPERVISORD + ["-c", str(supervisor.paths(part.root)["conf"])],
                            user=part.uid, group=part.gid, extra_groups=[], cwd=part.root,
                            env=proc.clean_env(part.root), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
        return True

    def run_inside(self, part, command, request, timeout):
        env = proc.clean_env(part.root)
        drop = {"user": part.uid, "group": part.gid, "extra_groups": []} \
            if os.geteuid() == 0 else {}
        return proc.run(INSIDE + [command], json.dumps(request).encode(), timeout, ANSWER_CAP,
                        cwd=part.root, env=env, **drop)

    def stop(self, part, graceful=True, grace=10.0):
        """Stop the partition's processes: with ``graceful``, services get their stop
        signal and up to ``grace`` seconds first; then whatever is left is killed."""
        if graceful:        # services get their stop signal and stop-wait first
            supervisor.shutdown(part.root, uid=part.uid)
            deadline = time.monotonic() + grace
            while supervisor.alive(part.root, uid=part.uid) and time.monotonic() < deadline:
                time.sleep(0.05)
        kill_all(part.uid)


def cgroup_v2():
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


class LxcIsolation:
    name = "lxc"
    HOLDER = ["/bin/sleep", "infinity"]    # the container's command when no service may run

    def __init__(self, config):
        self.config = config
        if not shutil.which("lxc-execute"):
            raise SlapnodeError("isolation = lxc but LXC is not installed (apt-get install lxc); "
                                "or set isolation = user in the node config")

    def container(self, part):
        return f"slapnode-{part.user}"

    def state(self):
        return Path(self.config.state_dir) / "lxc"

    def config_path(self, part):
        return self.state() / f"{self.container(part)}.conf"

    @staticmethod
    def uts_name(part, hostname=None):
        """The container's host name: the instance's name in DNS (its first label when
        the whole is over 64 characters), else the partition's reference (also for a
        name that is not a DNS name: it goes into lxc's configuration and to
        ``hostname`` as root). Pure."""
        if not hostname or not HOSTNAME_RE.match(hostname):
            return part.reference
        return hostname if len(hostname) <= 64 else hostname.split(".")[0]

    def render(self, part, hostname=None):
        """The container's configuration (pure apart from reading the cgroup layout)."""
        c = self.config
        v6 = c.ipv6_network
        lines = [
            f"lxc.uts.name = {self.uts_name(part, hostname)}",
            f"lxc.init.uid = {part.uid}",
            f"lxc.init.gid = {part.gid}",
            "lxc.console.path = none",
            "lxc.tty.max = 0",
            "lxc.pty.max = 0",
            "lxc.no_new_privs = 1",
            "lxc.mount.auto = proc:mixed sys:ro cgroup:mixed",
            "lxc.apparmor.profile = unconfined",
            # bind the IPv6 address at once, while duplicate address detection runs
            "lxc.sysctl.net.ipv6.ip_nonlocal_bind = 1",
            "lxc.net.0.type = veth",
            f"lxc.net.0.link = {c.bridge}",
            "lxc.net.0.flags = up",
            f"lxc.net.0.veth.pair = {veth_name(part.uid)}",
            f"lxc.net.0.hwaddr = {mac_address(c.bridge, part.ipv4)}",
            f"lxc.net.0.ipv4.address = {part.ipv4}/{c.ipv4_network.prefixlen}",
            f"lxc.net.0.ipv4.gateway = {nodeconfig.gateway_v4(c)}",
            f"lxc.net.0.ipv6.address = {part.ipv6}/{v6.prefixlen if c.ipv6_source != 'global' else 128}",
            f"lxc.net.0.ipv6.gateway = {nodeconfig.gateway_v6(c) if c.ipv6_source != 'global' else 'auto'}",
        ]
        # The partition's own /etc/hosts (its name first) and resolv.conf (the node's
        # resolver: instance names, then upstream; docs/network.md).
        state = self.state()
        lines += [
            f"lxc.mount.entry = {state / (self.container(part) + '.hosts')} etc/hosts none bind,ro,create=file 0 0",
            f"lxc.mount.entry = {state / (self.container(part) + '.resolv.conf')} etc/resolv.conf none bind,ro,create=file 0 0",
        ]
        # below the partitions' parent cgroup: the volunteer's totals and freezer hold it
        lines.append(f"lxc.cgroup.dir = {cgroups.Parent(c).lxc_dir(self.container(part))}")
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

    def running(self, part):
        return self._state(part)[0]

    def _state(self, part):
        """(running, the pid of its init or None) of the partition's container, as
        lxc sees it (root's view, never a file of the partition's): one lxc-info."""
        result = subprocess.run(["lxc-info", "-n", self.container(part), "-s", "-p"],
                                capture_output=True, text=True)
        fields = {}                     # "State:   RUNNING", "PID:   1234"
        for line in result.stdout.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        running = fields.get("state") == "RUNNING"
        pid = fields.get("pid", "")
        return running, (pid if running and pid.isdigit() else None)

    def ensure_running(self, part, services=False, hostname=None, zone=""):
        """The partition's container, started if it is not running: with its
        supervisord when ``services`` (the services start while the deployment
        enters; forked in by the zygote, else as the container's first process),
        else with a placeholder; named ``hostname`` (its instance's name in DNS).
        True when supervisord runs or is starting."""
        services_mark = self.state() / f"{self.container(part)}.services"
        running, pid = self._state(part)
        if running:
            # supervisord runs, or starts, when it is the container's first process or
            # the zygote's that still lives
            alive = _services_alive(services_mark) or supervisor.alive(part.root, uid=part.uid)
            if alive and hostname is not None:
                self._rename(part, hostname, pid)   # a warm container gets its instance's name
            return alive
        from ..format import dns

        state = self.state()
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = self.container(part)
        self._write_hosts(part, hostname)
        (state / f"{name}.resolv.conf").write_text(dns.resolv_conf(self.config, zone))
        path = self.config_path(part)
        path.write_text(self.render(part, hostname))
        log = state / f"{name}.log"
        for kept in (log, state / f"{name}.out"):       # bounded: cut back at each start
            if kept.exists() and kept.stat().st_size > LOG_CAP:
                kept.write_bytes(kept.read_bytes()[-LOG_CAP // 2:])
        if services and self._zygote_start(part, path, log, state / f"{name}.out",
                                           services_mark):
            return True
        command = SUPERVISORD + ["-c", str(supervisor.paths(part.root)["conf"])] \
            if services else self.HOLDER
        if services:
            services_mark.write_text("")        # supervisord is its first process
        else:
            services_mark.unlink(missing_ok=True)
        self._execute(part, path, log, state / f"{name}.out", command)
        return services

    def _execute(self, part, path, log, out_path, command):
        """Start the container (``command`` its first process); wait until it runs.
        The pid of its init (lxc-info's, root's view)."""
        with open(out_path, "ab") as out:
            proc.spawn_detached(["lxc-execute", "-n", self.container(part), "-f", str(path),
                                 "-o", str(log), "-l", "WARN", "--", *command],
                                cwd=part.root, env=proc.clean_env("/root"),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 15       # (lxc-wait looks only once a second)
        pause = 0.01            # then less often: many containers may be starting at once
        while True:
            running, pid = self._state(part)
            if running:
                return pid
            if time.monotonic() > deadline:
                raise SlapnodeError(f"the partition's container did not start; see {log}")
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _zygote_start(self, part, path, log, out_path, services_mark):
        """The container with a placeholder first, then its supervisord forked into it
        by the zygote (``deploy/zygote.py``: no interpreter to start, nothing to import).
        The mark names the supervisord (pid and start time: alive while that process
        is). False, with the container stopped again, when the zygote could not."""
        if not zygote.enabled():
            return False
        services_mark.unlink(missing_ok=True)
        pid = self._execute(part, path, log, out_path, self.HOLDER)
        spawned = zygote.shared().spawn(int(pid), self.container(part), part.uid, part.gid,
                                        part.root, supervisor.paths(part.root)["conf"],
                                        out_path) if pid else None
        started = zygote.started(spawned) if spawned else None
        if started is None:
            self.stop(part, graceful=False)
            return False
        services_mark.write_text(f"{spawned} {started}")
        return True

    def _write_hosts(self, part, hostname):
        """The container's /etc/hosts (bound from the state directory: rewritten in
        place, the container sees the new names at once)."""
        valid = hostname if hostname and HOSTNAME_RE.match(hostname) else None
        names = " ".join(filter(None, (valid, part.reference)))
        (self.state() / f"{self.container(part)}.hosts").write_text(
            f"{part.ipv4} {names}\n{part.ipv6} {names}\n127.0.0.1 localhost\n::1 localhost\n")

    def _rename(self, part, hostname, pid):
        """Give a running container (a warm one, started before its instance was known)
        the instance's host name, when it has another: its /etc/hosts, and the host name
        of its UTS namespace, set from root's side (``nsenter`` enters that namespace
        only; nothing of the partition's runs). The name it has is read from the
        configuration root wrote when it started it; ``pid`` is its init's."""
        path = self.config_path(part)
        wanted = self.uts_name(part, hostname)
        try:
            text = path.read_text()
        except OSError:
            return
        line = f"lxc.uts.name = {wanted}"
        if line in text.splitlines():
            return
        if pid is None:
            return
        # The namespace is held open before anything runs in it: if the container died
        # since lxc-info and its pid went to another process, that process is not in the
        # container's cgroup, and its namespace (the host's, likely) is never renamed.
        try:
            uts = os.open(f"/proc/{pid}/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if (os.fstat(uts).st_ino == os.stat("/proc/self/ns/uts").st_ino
                    or not _in_cgroup(pid, self.container(part))):
                return
            done = subprocess.run(["nsenter", f"--uts=/proc/self/fd/{uts}", "--", "hostname",
                                   wanted], capture_output=True, timeout=10, pass_fds=(uts,))
        finally:
            os.close(uts)
        if done.returncode != 0:
            raise SlapnodeError(f"cannot name the partition's container {wanted}: "
                                f"{done.stderr.decode(errors='replace').strip()[:200]}")
        self._write_hosts(part, hostname)
        path.write_text("\n".join(line if entry.startswith("lxc.uts.name =") else entry
                                  for entry in text.splitlines()) + "\n")

    def run_inside(self, part, command, request, timeout):
        """Run the partition side in its (running) container, as the partition user."""
        argv = ["lxc-attach", "-n", self.container(part), "-f", str(self.config_path(part)),
                "-u", str(part.uid), "-g", str(part.gid), "--clear-env"]
        for key, value in proc.clean_env(part.root).items():
            argv += ["-v", f"{key}={value}"]
        argv += ["--", *INSIDE, command]
        return proc.run(argv, json.dumps(request).encode(), timeout, ANSWER_CAP,
                        cwd=part.root, env=proc.clean_env("/root"))

    def stop(self, part, graceful=True, grace=None):
        if graceful:
            supervisor.stop_all(part.root, uid=part.uid, timeout=grace)
        subprocess.run(["lxc-stop", "-n", self.container(part), "--kill"],
                       capture_output=True, timeout=30)
        kill_all(part.uid)
        marker = f" {self.container(part)} ".encode()
        deadline = time.monotonic() + 5         # lxc-execute leaves once its container died
        while time.monotonic() < deadline and _root_process_with(marker):
            time.sleep(0.02)


def isolation_for(config):
    return LxcIsolation(config) if config.isolation == "lxc" else UserIsolation(config)

"""The partitions' parent cgroup: where the volunteer's totals and the freezer live.

Owns one cgroup per node, ``slapnode-<bridge>`` (named by slapnode's prefix, removed
by ``node unformat``), above every partition: with LXC each container's cgroup is
made below it (``lxc.cgroup.dir``), without LXC each partition's supervisord is
moved into a child of it. Its CPU quota and memory limit are the policy's totals
over all partitions; freezing it freezes every partition at once (the kernel's
freezer: nothing is killed or restarted) and thawing resumes them. Works on
cgroup v2 (one hierarchy: ``cpu.max``, ``memory.max``, ``cgroup.freeze``) and on
v1 (``cpu``, ``cpuacct``, ``memory``, ``freezer``, ``pids`` hierarchies).
"""

import os
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD = 100_000                # microseconds
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "freezer", "pids")


def v2():
    return (ROOT / "cgroup.controllers").exists()


def name_of(config):
    return f"slapnode-{config.bridge}"


def _write(path, value):
    with open(path, "w") as stream:
        stream.write(str(value))


def _read(path):
    with open(path) as stream:
        return stream.read().strip()


class Parent:
    def __init__(self, config):
        self.name = name_of(config)
        self.v2 = v2()

    # -- where ---------------------------------------------------------------------
    def path(self, controller=None, child=None):
        base = ROOT / self.name if self.v2 else ROOT / controller / self.name
        return base / child if child else base

    def lxc_dir(self, container):
        """``lxc.cgroup.dir`` of a partition's container: below the parent."""
        return f"{self.name}/{container}"

    def exists(self):
        return self.path("freezer").is_dir()

    # -- making and removing -------------------------------------------------------
    def ensure(self):
        if self.v2:
            self.path().mkdir(exist_ok=True)
            wanted = {"cpu", "memory", "pids"}
            available = set(_read(ROOT / "cgroup.subtree_control").split())
            for controller in wanted - available:
                try:
                    _write(ROOT / "cgroup.subtree_control", f"+{controller}")
                except OSError:
                    pass
            for controller in wanted:
                try:
                    _write(self.path() / "cgroup.subtree_control", f"+{controller}")
                except OSError:
                    pass
            return
        for controller in V1_CONTROLLERS:
            if (ROOT / controller).is_dir():
                self.path(controller).mkdir(exist_ok=True)

    def remove(self):
        """Thaw, then remove the parent and whatever empty cgroups are left below it, in
        every hierarchy (LXC makes the parent in each one it uses)."""
        self.freeze(False)
        bases = [self.path()] if self.v2 else \
            [hierarchy / self.name for hierarchy in ROOT.iterdir() if hierarchy.is_dir()]
        for base in bases:
            if not base.is_dir():
                continue
            for directory, _subdirs, _files in sorted(os.walk(base), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(directory)
                except OSError:
                    pass

    # -- limits --------------------------------------------------------------------
    def set_limits(self, cpu_pct, memory_mb, cpus=None):
        """All partitions together: at most ``cpu_pct`` % of the machine's CPUs, and
        ``memory_mb`` of memory (0: no limit of ours)."""
        cpus = cpus or os.cpu_count() or 1
        quota = int(PERIOD * cpus * cpu_pct / 100) if cpu_pct < 100 else None
        memory = memory_mb * 2**20 if memory_mb else None
        if self.v2:
            _write(self.path() / "cpu.max", f"{quota if quota else 'max'} {PERIOD}")
            _write(self.path() / "memory.max", memory if memory else "max")
            return
        _write(self.path("cpu") / "cpu.cfs_period_us", PERIOD)
        _write(self.path("cpu") / "cpu.cfs_quota_us", quota if quota else -1)
        _write(self.path("memory") / "memory.limit_in_bytes", memory if memory else -1)

    def limits(self):
        """(cpu % of the machine or None, memory MB or None) as the kernel holds them."""
        cpus = os.cpu_count() or 1
        try:
            if self.v2:
                quota, period = _read(self.path() / "cpu.max").split()
                memory = _read(self.path() / "memory.max")
                cpu = None if quota == "max" else 100 * int(quota) / int(period) / cpus
                return cpu, None if memory == "max" else int(memory) // 2**20
            quota = int(_read(self.path("cpu") / "cpu.cfs_quota_us"))
            period = int(_read(self.path("cpu") / "cpu.cfs_period_us"))
            memory = int(_read(self.path("memory") / "memory.limit_in_bytes"))
            return (None if quota < 0 else 100 * quota / period / cpus,
                    None if memory >= 2**62 else memory // 2**20)
        except (OSError, ValueError):
            return None, None

    # -- the freezer ---------------------------------------------------------------
    def freeze(self, frozen, wait=2.0):
        """Freeze (or thaw) every partition; True once the kernel says it is done."""
        try:
            if self.v2:
                _write(self.path() / "cgroup.freeze", 1 if frozen else 0)
            else:
                _write(self.path("freezer") / "freezer.state", "FROZEN" if frozen else "THAWED")
        except OSError:
            return False
        deadline = time.monotonic() + wait
        while self.frozen() != frozen:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def frozen(self):
        try:
            if self.v2:
                for line in _read(self.path() / "cgroup.events").splitlines():
                    if line.startswith("frozen "):
                        return line.split()[1] == "1"
                return False
            return _read(self.path("freezer") / "freezer.state") == "FROZEN"
        except OSError:
            return False

    # -- what the partitions use ---------------------------------------------------
    def cpu_seconds(self):
        """CPU time every partition used since the parent was made."""
        try:
            if self.v2:
                for line in _read(self.path() / "cpu.stat").splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return 0.0
            return int(_read(self.path("cpuacct") / "cpuacct.usage")) / 1e9
        except (OSError, ValueError):
            return 0.0

    def memory_mb(self):
        try:
            name = "memory.current" if self.v2 else "memory.usage_in_bytes"
            return int(_read(self.path("memory") / name)) / 2**20
        except (OSError, ValueError):
            return 0.0

    # -- partitions without LXC ----------------------------------------------------
    def attach(self, child, pid):
        """Move process ``pid`` (a partition's supervisord) into child cgroup ``child``."""
        for controller in ((None,) if self.v2 else V1_CONTROLLERS):
            base = self.path(controller)
            if not base.is_dir():
                continue
            target = base / child
            target.mkdir(exist_ok=True)
            _write(target / "cgroup.procs", pid)

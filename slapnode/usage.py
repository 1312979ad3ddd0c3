"""What each partition uses: CPU time, memory, disk and network, read from the kernel.

Owns the measurement only (pure reading, no effects); the agent sends it with
its reports, and the master keeps it as history and bills it.

Counters are cumulative and may start again from zero (a container restarted,
its veth made anew); the master takes a smaller value than the last as a new
start. CPU time is the container's cgroup counter when the partition runs in
one (every process it ever ran, also those that ended), else the sum over the
partition user's live processes. Network bytes are the host side of the
partition's veth (LXC only): what it transmits went into the partition.
"""

import os
import time

from .proc import stat_fields

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def processes_by_uid():
    """{uid: [pid]} from one scan of /proc (one per pass, shared by its partitions)."""
    by_uid = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                by_uid.setdefault(entry.stat().st_uid, []).append(entry.name)
            except OSError:
                continue
    return by_uid


def _cpu_and_memory(pids):
    cpu, memory = 0.0, 0
    for pid in pids:
        fields = stat_fields(pid)
        try:
            cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS     # utime + stime
            memory += int(fields[21]) * PAGE                              # rss pages
        except (TypeError, IndexError, ValueError):
            continue
    return cpu, memory


def disk_bytes(root):
    """Bytes a partition takes on disk. Walked through descriptors (``os.fwalk``):
    a link its user left never takes the count outside the partition."""
    total = 0
    try:
        for _, _, files, dir_fd in os.fwalk(root):
            for name in files:
                try:
                    total += os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_blocks * 512
                except OSError:
                    continue
    except OSError:
        pass
    return total


CGROUP = "/sys/fs/cgroup"


def container_cpu_seconds(pids, container):
    """CPU seconds of the cgroup of LXC container ``container`` (cgroup v1 cpuacct or
    v2 cpu.stat), found through a process of it; None when no process is in one."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cgroup") as stream:
                lines = stream.read().splitlines()
        except OSError:
            continue
        for line in lines:
            _, controllers, path = line.split(":", 2)
            parts = path.split("/")
            top = next((i for i, p in enumerate(parts) if p.endswith(container)), None)
            if top is None:
                continue
            base = "/".join(parts[:top + 1])
            try:
                if "cpuacct" in controllers.split(","):
                    with open(f"{CGROUP}/cpuacct{base}/cpuacct.usage") as stream:
                        return int(stream.read()) / 1e9
                if controllers == "":
                    with open(f"{CGROUP}{base}/cpu.stat") as stream:
                        for stat in stream:
                            if stat.startswith("usage_usec "):
                                return int(stat.split()[1]) / 1e6
            except (OSError, ValueError):
                continue
        return None
    return None


def interface_bytes(name):
    """(received, transmitted) bytes of network interface ``name``, or None."""
    try:
        with open(f"/sys/class/net/{name}/statistics/rx_bytes") as rx, \
                open(f"/sys/class/net/{name}/statistics/tx_bytes") as tx:
            return int(rx.read()), int(tx.read())
    except (OSError, ValueError):
        return None


def partition_usage(part, by_uid=None, container=None, veth=None):
    """A partition's usage now. ``container``: its LXC container's name (for the cgroup
    CPU counter); ``veth``: the host side of its veth (for network bytes)."""
    by_uid = processes_by_uid() if by_uid is None else by_uid
    pids = by_uid.get(part.uid, [])
    cpu, memory = _cpu_and_memory(pids)
    if container is not None:
        counted = container_cpu_seconds(pids, container)
        cpu = counted if counted is not None else cpu
    result = {"cpu_seconds": round(cpu, 2), "memory_mb": round(memory / 2**20, 1),
              "disk_mb": round(disk_bytes(part.root) / 2**20, 3), "at": int(time.time())}
    counters = interface_bytes(veth) if veth else None
    if counters is not None:
        received, transmitted = counters
        result["net_in_bytes"] = transmitted      # the host side sends into the partition
        result["net_out_bytes"] = received
    return result

"""What each partition uses: CPU time, memory and disk, read from /proc and the disk.

Owns the measurement only (pure reading, no effects); the agent sends it with
its reports so that the master can show it and, later, bill it.
"""

import os
import time

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
        try:
            with open(f"/proc/{pid}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS     # utime + stime
            memory += int(fields[21]) * PAGE                              # rss pages
        except (OSError, IndexError, ValueError):
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


def partition_usage(part, by_uid=None):
    by_uid = processes_by_uid() if by_uid is None else by_uid
    cpu, memory = _cpu_and_memory(by_uid.get(part.uid, []))
    return {"cpu_seconds": round(cpu, 2), "memory_mb": round(memory / 2**20, 1),
            "disk_mb": round(disk_bytes(part.root) / 2**20, 3), "at": int(time.time())}

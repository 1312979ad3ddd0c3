"""Child processes the agent starts: bounded in time and in output, or detached.

Owns how root runs a process whose output it does not trust (a worker as the
software user, a command inside a partition): its input given on a pipe
(never in a file an untrusted user could swap), its output read up to a cap
(the rest is drained and dropped, so the child never blocks on a full pipe),
and a deadline after which its whole process group is killed. Also owns
starting a daemon that must outlive the agent, and reading a process's
``/proc/PID/stat``.
"""

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


def stat_fields(pid):
    """The fields of ``/proc/PID/stat`` after the command name (index 0 is stat(5)'s
    field 3, the state; the name, which may hold spaces and parentheses, is skipped),
    or None when there is no such process."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as stream:
            return stream.read().rsplit(b")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None


def runtime_dir(kind, key, make=True):
    """A directory for files a process that dropped its privileges must still read
    (dnsmasq's hosts): under /run/slapnode when we are root (tmpfs: gone at reboot,
    like the processes), named after ``key`` (a data or state directory, private)."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256(str(Path(key).resolve()).encode()).hexdigest()[:12]
    base = Path("/run/slapnode") if os.geteuid() == 0 else Path(key)
    path = base / f"{kind}-{digest}"
    if not make:            # (only looking: an unformatted node leaves no empty directory)
        return path
    path.mkdir(parents=True, exist_ok=True)
    for directory in (base, path):
        os.chmod(directory, 0o755)
    return path


def clean_env(home, **extra):
    """The environment of everything started as another user: nothing of ours leaks."""
    env = {"PATH": CLEAN_PATH, "HOME": str(home), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(extra)
    return env


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes
    truncated: bool = False
    timed_out: bool = False

    def last_error_line(self, default="failed"):
        lines = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:500] if lines else default


def run(argv, input=b"", timeout=60.0, cap=1 << 20, err_cap=64 << 10, cancel=None, **popen):
    """Run ``argv`` with ``input`` on stdin; at most ``cap`` bytes of stdout and the last
    ``err_cap`` bytes of stderr are kept. After ``timeout`` seconds, or as soon as the
    ``cancel`` event is set, the process group is killed (``timed_out``). Never raises
    for what the child does."""
    popen.setdefault("start_new_session", True)
    process = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
    out, err = bytearray(), bytearray()
    truncated = timed_out = False
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    pending_input = memoryview(input or b"")
    if pending_input:
        os.set_blocking(process.stdin.fileno(), False)
        selector.register(process.stdin, selectors.EVENT_WRITE)
    else:
        process.stdin.close()
    selector.register(process.stdout, selectors.EVENT_READ)
    selector.register(process.stderr, selectors.EVENT_READ)
    open_streams = 2
    try:
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (cancel is not None and cancel.is_set()):
                timed_out = True
                break
            for key, _ in selector.select(min(remaining, 0.2 if cancel is not None else 1.0)):
                if key.fileobj is process.stdin:
                    try:
                        written = os.write(process.stdin.fileno(), pending_input[:1 << 16])
                    except (BrokenPipeError, BlockingIOError) as exc:
                        written = 0 if isinstance(exc, BlockingIOError) else len(pending_input)
                    pending_input = pending_input[written:]
                    if not pending_input:
                        selector.unregister(process.stdin)
                        process.stdin.close()
                    continue
                chunk = os.read(key.fileobj.fileno(), 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                elif key.fileobj is process.stdout:
                    room = cap - len(out)
                    if len(chunk) > room:
                        truncated = True
                    out += chunk[:max(room, 0)]
                else:
                    err += chunk
                    del err[:-err_cap]
    finally:
        selector.close()
        if timed_out:
            kill_group(process)
        try:
            returncode = process.wait(max(deadline - time.monotonic(), 0) + 5)
        except subprocess.TimeoutExpired:
            kill_group(process)
            returncode = process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if not stream.closed:
                stream.close()
    return Result(returncode, bytes(out), bytes(err), truncated, timed_out)


def kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            process.kill()
        except ProcessLookupError:
            pass


def spawn_detached(cmd, **kwargs):
    """Start ``cmd`` so that it outlives us and is never our zombie: a shell
    starts it in the background and exits at once, leaving it to init."""
    shell = subprocess.Popen(["/bin/sh", "-c", '"$@" &', "sh", *map(str, cmd)], **kwargs)
    shell.wait()

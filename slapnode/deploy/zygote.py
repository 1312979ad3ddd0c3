"""The supervisord zygote: partitions' supervisords forked into their containers, warm.

A cold partition's container used to start a new interpreter as its supervisord
(``lxc-execute … python -m supervisor.supervisord``), which then imported
supervisor and forked its warm deployer (``deploy/deployer.py``), which imported
the partition side: about 0.2 s of CPU per partition before its deployment began,
the largest part of a burst (50 requests at once on a 2-core machine,
``bench/scale_bench.py``). The zygote pays for those imports once per node agent.

It is a process of its own (``python -I -m slapnode.deploy.zygote``, root, started
by the agent, never a fork of the agent: it holds no token, key or state of the
node), which imports supervisord and the partition side and then waits for
requests on its stdin. For each one it forks a child that enters a running
container the way ``lxc-attach`` does:

1. the container's init is named by root (``lxc-info``); its namespaces are opened,
   then its cgroups read and checked to be the container's (a pid reused since is
   refused: its namespaces would not match what was opened);
2. the child joins the init's cgroups in every hierarchy (limits, freezer and pids
   count it from then on), then its cgroup, ipc, uts, net, pid and mount namespaces;
3. it forks again (a pid namespace takes only the children of who enters it), and
   that one forks the supervisord and leaves (so that the container's init adopts it;
   the kernel tells its pid in the host's numbering over a socket); the supervisord,
   in the container, starts a session, drops to the partition user
   (no supplementary groups, ``no_new_privs``, every capability gone with root),
   takes the same environment, descriptors (/dev/null, the container's output
   file) and umask a supervisord started by lxc would have, and runs supervisord
   with the partition's configuration.

What runs in the partition is then exactly what ran there before: supervisord as
the partition user, in the container, parsing the configuration the agent wrote,
forking the deployer. Only the interpreter's start and the imports were done
before, by root, from root's files. The zygote's memory holds nothing but those
modules; it reads nothing the partitions can write, and the requests come from the
agent alone (a pipe). When anything is wrong (no zygote, a request refused, a
container that died meanwhile) the agent starts the container the old way.
"""

import ctypes
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

from .. import proc
from ..errors import SlapnodeError

NAMESPACES = ("cgroup", "ipc", "uts", "net", "pid", "mnt")       # the order they are entered
CGROUP_ROOT = Path("/sys/fs/cgroup")
ENVIRONMENT = {"container": "lxc"}       # what lxc gives a container's first process
PR_SET_DUMPABLE, PR_SET_NAME, PR_SET_NO_NEW_PRIVS = 4, 15, 38
ANSWER_TIMEOUT = 10.0       # seconds the agent waits for a supervisord's pid
IDLE = 120.0                # seconds the zygote stays without a request (then it leaves)


# -- pure: where the init's cgroups are -------------------------------------------------

def cgroup_dirs(cgroup_text, root=CGROUP_ROOT, exists=os.path.isdir):
    """The directories of the cgroups listed in ``/proc/PID/cgroup`` (``cgroup_text``),
    one per hierarchy: ``0::/p`` in the unified hierarchy (``root`` itself on cgroup v2,
    ``root/unified`` on a hybrid machine), ``N:cpu,cpuacct:/p`` in ``root/cpu,cpuacct``,
    ``N:name=systemd:/p`` in ``root/systemd``. SlapnodeError for a hierarchy that is not
    mounted there, or a path that climbs. Pure but for ``exists``."""
    dirs = []
    for line in cgroup_text.splitlines():
        if not line.strip():
            continue
        _number, controllers, path = line.split(":", 2)
        if not path.startswith("/") or "/../" in f"{path}/" or "\0" in path:
            raise SlapnodeError(f"a cgroup path that cannot be joined: {path!r}")
        if controllers == "":
            base = root if exists(str(root / "cgroup.procs")) or not exists(str(root / "unified")) \
                else root / "unified"
        else:
            base = root / (controllers[5:] if controllers.startswith("name=") else controllers)
        target = base / path.lstrip("/")
        if not exists(str(target)):
            raise SlapnodeError(f"the cgroup {controllers or 'v2'}:{path} is not under {base}")
        dirs.append(target)
    return dirs


# -- the zygote: root, started by the agent ----------------------------------------------

_libc = None


def _prctl(option, value):
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl {option}")


def _setns(fd):
    if _libc.setns(fd, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _preload():
    """supervisord and what its warm deployer imports, once."""
    from supervisor import supervisord, rpcinterface, http, options  # noqa: F401

    from . import deployer, rpc  # noqa: F401

    deployer._preload()


def _enter(request):
    """In the zygote's child (root): open the init's namespaces, check it is the
    container's, join its cgroups and namespaces, fork the supervisord. Returns its
    pid (the host's number)."""
    from .isolation import _in_cgroup

    pid = int(request["pid"])
    opened = {name: os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
              for name in NAMESPACES}
    with open(f"/proc/{pid}/cgroup") as stream:
        text = stream.read()
    # the same process still: its namespaces are those opened, and it is the container's
    for name, fd in opened.items():
        if os.fstat(fd).st_ino != os.stat(f"/proc/{pid}/ns/{name}").st_ino:
            raise SlapnodeError("the container's init changed")
    if not _in_cgroup(pid, request["container"]):
        raise SlapnodeError("that process is not the container's")
    if any(os.fstat(fd).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino
           for name, fd in opened.items() if name in ("net", "pid", "mnt")):
        raise SlapnodeError("the container shares the host's namespaces")
    out = os.open(request["out"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                  | os.O_CLOEXEC, 0o600)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    for directory in cgroup_dirs(text):
        with open(directory / "cgroup.procs", "w") as stream:
            stream.write(str(os.getpid()))
    # the supervisord says its pid through the kernel, which gives it in our numbering
    receiver, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    for name in NAMESPACES:
        _setns(opened[name])
        os.close(opened[name])
    first = os.fork()
    if first == 0:
        # in the container's pid namespace; forks the supervisord and leaves, so that
        # the container's init adopts it (a process whose parent left is adopted by
        # the init of its parent's namespace: not the host's)
        code = 1
        try:
            receiver.close()
            if os.fork() == 0:
                try:
                    sender.sendmsg([b"."], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                                             struct.pack("3i", os.getpid(), 0, 0))])
                    sender.close()
                    _become(request, out, null)
                    code = 0
                finally:
                    os._exit(code)
            code = 0
        finally:
            os._exit(code)
    sender.close()
    os.waitpid(first, 0)
    receiver.settimeout(ANSWER_TIMEOUT / 2)
    _data, ancillary, _flags, _address = receiver.recvmsg(8, socket.CMSG_SPACE(12))
    receiver.close()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return struct.unpack("3i", data[:12])[0]
    raise SlapnodeError("the supervisord did not say its pid")


def _become(request, out, null):
    """The grandchild, in the container: the partition user's supervisord."""
    os.setsid()
    uid, gid = int(request["uid"]), int(request["gid"])
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        os._exit(1)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_DUMPABLE, 1)          # as after an exec: its own user may look at it
    _libc.prctl(PR_SET_NAME, b"supervisord", 0, 0, 0)   # its name in ps -o comm, top
    for number in range(1, signal.NSIG):
        if number not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(number, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    os.umask(0o022)
    os.dup2(null, 0, inheritable=True)
    os.dup2(out, 1, inheritable=True)
    os.dup2(out, 2, inheritable=True)
    os.closerange(3, 65536)
    os.chdir(request["root"])
    os.environ.clear()
    os.environ.update(ENVIRONMENT)
    sys.argv = ["supervisord", "-c", request["conf"]]
    from supervisor import supervisord

    supervisord.main(["-c", request["conf"]])


def _serve():
    """Answer each request line with a line: {"pid": N} or {"error": "..."}; leave at
    the end of stdin (the agent is gone) or after IDLE seconds without a request."""
    import select

    while select.select([sys.stdin], [], [], IDLE)[0]:
        line = sys.stdin.readline()
        if not line:
            return
        answer = {}
        read, write = os.pipe()
        try:
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            child = os.fork()
            if child == 0:
                os.close(read)
                try:
                    message = {"pid": _enter(request)}
                except BaseException as exc:    # noqa: BLE001 - said to the agent
                    message = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                os.write(write, json.dumps(message).encode())
                os._exit(0)
            os.close(write)
            write = None
            data = b""
            while chunk := os.read(read, 4096):
                data += chunk
            os.waitpid(child, 0)
            answer = json.loads(data) if data else {"error": "the zygote's child died"}
        except (ValueError, KeyError, TypeError, OSError) as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        finally:
            os.close(read)
            if write is not None:
                os.close(write)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def main():
    global _libc
    _libc = ctypes.CDLL(None, use_errno=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # a Ctrl-C is the agent's; it closes stdin
    _preload()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    _serve()


# -- the agent's side --------------------------------------------------------------------

class Zygote:
    """The agent's handle on its zygote: started at its first use (and again when it
    left, idle, or died), one request at a time. ``spawn`` returns the supervisord's
    pid, or None when the zygote cannot give one (the caller starts the container the
    old way)."""

    def __init__(self):
        self.process = None
        self.lock = threading.Lock()
        self.broken = False

    def _start(self):
        process = subprocess.Popen([sys.executable, "-I", "-m", "slapnode.deploy.zygote"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, cwd="/", text=True,
                                   env=proc.clean_env("/root"))
        if not self._readable(process, 30) or process.stdout.readline().strip() != "ready":
            self._end(process)
            self.broken = True          # it cannot start here: not tried again
            return None
        return process

    @staticmethod
    def _readable(process, seconds):
        import select

        return bool(select.select([process.stdout], [], [], seconds)[0])

    def spawn(self, pid, container, uid, gid, root, conf, out):
        request = json.dumps({"pid": pid, "container": container, "uid": uid, "gid": gid,
                              "root": str(root), "conf": str(conf), "out": str(out)}) + "\n"
        with self.lock:
            for _attempt in (1, 2):         # (a zygote that just left idle: a new one)
                if self.broken:
                    return None
                if self.process is None or self.process.poll() is not None:
                    self.process = self._start()
                    if self.process is None:
                        return None
                try:
                    self.process.stdin.write(request)
                    self.process.stdin.flush()
                    if not self._readable(self.process, ANSWER_TIMEOUT):
                        self.close()        # (a frozen container: its child waits)
                        return None
                    line = self.process.stdout.readline()
                except OSError:
                    line = ""
                if line:
                    try:
                        answer = json.loads(line)
                    except ValueError:
                        answer = {}
                    found = answer.get("pid")
                    return found if isinstance(found, int) and found > 1 else None
                self.close()
        return None

    def close(self):
        process, self.process = self.process, None
        if process is not None:
            self._end(process)

    @staticmethod
    def _end(process):
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass


_shared = Zygote()


def enabled():
    """Whether containers' supervisords come from the zygote (``SLAPNODE_ZYGOTE=0`` in
    the agent's environment: the old way, a new interpreter in each container)."""
    return os.environ.get("SLAPNODE_ZYGOTE", "1") != "0" and not _shared.broken


def started(pid):
    """The start time of process ``pid`` (clock ticks after boot), None without one:
    with the pid, it names one process (a pid is reused, never both)."""
    fields = proc.stat_fields(pid)
    try:
        return int(fields[19])      # field 22 of stat(5)
    except (TypeError, ValueError, IndexError):
        return None


def shared():
    """The process's zygote handle (one per agent)."""
    return _shared


if __name__ == "__main__":
    main()

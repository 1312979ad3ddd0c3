"""The warm deployer: the partition side kept loaded next to its supervisord, and root's call to it.

A deployment used to cost a new interpreter entering the container (``lxc-attach
… python -m slapnode.deploy.inside``) and its imports: about a quarter of a
second before the first recipe ran. The partition's supervisord is already a
Python process in the container, as the partition user. When it starts
(``deploy/rpc.py``'s factory, before its loop) it forks the deployer: a process
that imports the partition side once (engine, recipes, templates, promises:
about 5 MB) and listens on ``var/run/deploy.sock`` (0600). Each request forks
the deployer again: the child does exactly what ``inside`` does and exits, so
a deployment's changes to process state (environment, working directory,
signals, memory) never outlive it. The deployer has one thread (no fork from a
threaded process), closes what it inherited from supervisord, leaves when
supervisord does, and leaves IDLE seconds after the last deployment it did: a
partition that holds an instance pays for it only while it is being deployed.
A free partition's deployer waits (``deploy/warm.py``).

Nothing changes at the trust boundary: the socket is opened by root as
supervisord's socket is (``supervisor.connect_socket``: no link followed, a
socket owned by the partition user), the request is what ``inside`` would read
on its stdin, and the answer, bounded in size and time, is checked by
``partition.applied_from`` as any word from a partition is. When the socket
does not answer (supervisord not up yet, the deployer gone, or the partition
broke it), the agent falls back to ``lxc-attach``.

Protocol: the request as JSON, then end of stream; the answer as JSON, or ``!``
and one line saying why there is none.
"""

import json
import os
import signal
import socket
import time
from pathlib import Path

SOCKET = "var/run/deploy.sock"
MAX_REQUEST = 8 << 20
PING = json.dumps({"command": "ping"}).encode()
IDLE = 30.0                 # seconds the deployer stays after its last deployment
TICK = 5.0                  # how often it looks whether supervisord is still there
RESET_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                 signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)


# -- the partition side: a process forked from the partition's supervisord -------------------

def serve(root):
    """Fork the deployer (called in supervisord, before its loop). Its pid."""
    path = Path(root) / SOCKET
    if path.is_socket() or path.is_symlink():
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(4)
    bound = _identity(path)     # the socket file's own (a socket's fstat tells another inode)
    parent = os.getpid()
    pid = os.fork()
    if pid:
        listener.close()
        return pid
    code = 0
    try:
        for number in RESET_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        os.closerange(3, listener.fileno())     # supervisord's sockets, logs, pipes
        os.closerange(listener.fileno() + 1, 65536)
        _loop(listener, Path(root), parent, bound)
    except BaseException:           # noqa: BLE001 - the deployer just goes; root falls back
        code = 1
    finally:
        os._exit(code)


def _preload():
    """Import what a deployment needs, once, so that every fork starts warm: the
    engine, the partition side, and slapnode's own recipes (found once: the lookup
    reads package metadata)."""
    from importlib import metadata

    from .. import recipes
    from ..software import engine  # noqa: F401
    from . import inside, promises, status, supervisor  # noqa: F401
    import jinja2  # noqa: F401

    for entry in metadata.distribution("slapnode").entry_points:
        if entry.group == recipes.GROUP:
            recipes.find(f"slapnode:{entry.name}")


def _loop(listener, root, parent, bound):
    try:
        _preload()
    except Exception:           # noqa: BLE001 - a broken import shows at the first request
        pass
    listener.settimeout(TICK)
    last_deploy = None
    while True:
        if os.getppid() != parent or _identity(Path(root) / SOCKET) != bound:
            return              # supervisord is gone, or started another deployer
        if last_deploy is not None and time.monotonic() - last_deploy > IDLE:
            if _identity(Path(root) / SOCKET) == bound:
                (Path(root) / SOCKET).unlink(missing_ok=True)
            return
        try:
            connection, _ = listener.accept()
        except socket.timeout:
            continue
        with connection:
            try:
                if _answer(connection, root):
                    last_deploy = time.monotonic()
            except OSError:
                pass


def _identity(path):
    """(device, inode) of the file at ``path``, not following a link; None without one."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _read_all(connection, cap):
    chunks, size = [], 0
    while True:
        data = connection.recv(1 << 16)
        if not data:
            return b"".join(chunks)
        size += len(data)
        if size > cap:
            raise OSError("request too large")
        chunks.append(data)


def _answer(connection, root):
    """Answer one request; True when it was a deployment."""
    connection.settimeout(30)
    request = _read_all(connection, MAX_REQUEST)
    if request == PING:         # root asks whether the deployer is there: no fork for that
        connection.sendall(b"{}")
        return False
    connection.settimeout(None)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:                # the child: one deployment, then gone
        code = 0
        try:
            os.close(reader)
            connection.close()
            os.chdir(root)
            # the environment lxc-attach would have given (supervisord's may be another)
            from ..proc import clean_env

            os.environ.clear()
            os.environ.update(clean_env(root))
            out = json.dumps(_run(json.loads(request))).encode()
        except BaseException as exc:        # noqa: BLE001 - said to root, never raised
            from .inside import _one_line

            out = f"!{type(exc).__name__}: {_one_line(exc)}".encode()
            code = 1
        try:
            view = memoryview(out)
            while view:
                view = view[os.write(writer, view):]
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader, "rb") as stream:
        out = stream.read()
    os.waitpid(pid, 0)
    connection.sendall(out or b"!the deployment process died without an answer")
    return True


def _run(request):
    from . import inside

    command = request.pop("command", "apply")
    if command != "apply":
        raise ValueError(f"unknown command {command!r}")
    return inside.apply(request)


# -- root's side ------------------------------------------------------------------------

def ask(root, uid, command, request, timeout, cap):
    """The partition side's answer through its warm deployer, as a ``proc.Result``;
    None when the deployer does not answer the connection (then use ``lxc-attach``)."""
    from .. import proc, safefs
    from .supervisor import connect_socket

    try:
        sock = connect_socket(root, SOCKET, uid, timeout=2)
    except (OSError, safefs.Refused):
        return None
    deadline = time.monotonic() + timeout
    with sock:
        try:
            # (a deployer still loading its imports takes a large request late)
            sock.settimeout(timeout)
            sock.sendall(json.dumps({**request, "command": command}).encode())
            sock.shutdown(socket.SHUT_WR)
            chunks, size = [], 0
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return proc.Result(-9, b"", b"", timed_out=True)
                sock.settimeout(left)
                data = sock.recv(1 << 16)
                if not data:
                    break
                size += len(data)
                if size > cap:
                    return proc.Result(0, b"", b"", truncated=True)
                chunks.append(data)
        except socket.timeout:
            return proc.Result(-9, b"", b"", timed_out=True)
        except OSError as exc:
            return proc.Result(1, b"", f"the partition's deployer broke off: {exc}".encode())
    out = b"".join(chunks)
    if out.startswith(b"{"):
        return proc.Result(0, out, b"")
    return proc.Result(1, b"", (out[1:] if out.startswith(b"!") else out)[:2000])

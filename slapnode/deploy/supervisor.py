"""One supervisord per partition: its configuration, and talking to it.

Owns the supervisord.conf of a partition (pure: ``render``; the agent writes
it through descriptors, ``safefs.write_at``), where its socket and logs live,
and the XML-RPC calls over that unix socket (start, stop, reload the programs,
read their states, run the promises: ``deploy/rpc.py``).

The socket lives in the partition, so whoever calls it from outside (the root
agent) must not be led elsewhere: it is opened with ``O_PATH | O_NOFOLLOW``
through directories walked without following links, checked to be a socket
owned by the partition user, and connected through ``/proc/self/fd``. What
comes back is bounded in size and time: the other end may be anything the
partition user put there.
"""

import http.client
import os
import socket
import stat
import time
import xmlrpc.client
from pathlib import Path

from .. import safefs

MAX_RESPONSE = 4 << 20          # bytes of XML-RPC answer we read at most
STOP_TIMEOUT = 300              # a program may take its stopwaitsecs to stop; calls wait for it

RUNNING_STATES = {"RUNNING"}
FAILED_STATES = {"FATAL", "EXITED", "UNKNOWN"}
STOPPING_STATES = {"RUNNING", "STARTING", "STOPPING", "BACKOFF"}
STOP_POLL = 0.02


SOCKET = "var/run/supervisord.sock"


def paths(root):
    root = Path(root)
    return {
        "conf": root / "etc" / "supervisord.conf",
        "socket": root / "var" / "run" / "supervisord.sock",
        "pid": root / "var" / "run" / "supervisord.pid",
        "log": root / "var" / "log" / "supervisord.log",
        "programs": root / "etc" / "supervisor.d",
    }


def render(root, identifier):
    """supervisord.conf for the partition at ``root`` (the agent writes it there,
    through descriptors; ``deploy/partition.py``)."""
    p = paths(root)
    return f"""[unix_http_server]
file = {p['socket']}
chmod = 0700

[supervisord]
logfile = {p['log']}
logfile_maxbytes = 5MB
logfile_backups = 2
pidfile = {p['pid']}
childlogdir = {Path(root) / 'var' / 'log'}
identifier = {identifier}
nodaemon = true
silent = true
directory = {root}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[rpcinterface:slapnode]
supervisor.rpcinterface_factory = slapnode.deploy.rpc:make
root = {root}

[supervisorctl]
serverurl = unix://{p['socket']}

[include]
files = {p['programs']}/*.conf
"""


def connect_socket(root, relpath, uid, timeout):
    """A connected unix socket to ``root/relpath``, never following a link: the
    socket must be a socket owned by ``uid`` (None: whoever we are)."""
    parent, _, name = relpath.rpartition("/")
    with safefs.opened_dir(root, parent) as dir_fd:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode):
            raise safefs.Refused(f"{root}/{relpath}: not a socket; refused")
        if st.st_uid != (os.geteuid() if uid is None else uid):
            raise safefs.Refused(f"{root}/{relpath}: owned by uid {st.st_uid}; refused")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(f"/proc/self/fd/{fd}")
        except OSError:
            sock.close()
            raise
        return sock
    finally:
        os.close(fd)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, root, uid, timeout):
        super().__init__("localhost", timeout=timeout)
        self.root, self.uid = root, uid

    def connect(self):
        self.sock = connect_socket(self.root, SOCKET, self.uid, self.timeout)


class _UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over the partition's socket; the answer is read up to MAX_RESPONSE
    bytes and within the deadline, whatever the other end sends."""

    def __init__(self, root, uid, timeout):
        super().__init__()
        self.root, self.uid, self.timeout = str(root), uid, timeout

    def make_connection(self, host):
        return _UnixConnection(self.root, self.uid, self.timeout)

    def parse_response(self, response):
        deadline = time.monotonic() + self.timeout
        parser, unmarshaller = self.getparser()
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise OSError("supervisord answered too slowly")
            data = response.read(1 << 16)
            if not data:
                break
            size += len(data)
            if size > MAX_RESPONSE:
                raise OSError("supervisord's answer is too large")
            parser.feed(data)
        parser.close()
        return unmarshaller.close()


def proxy(root, timeout=10, uid=None):
    """An XML-RPC proxy to the partition's supervisord (``uid``: who must own its
    socket; None when we are the partition user ourselves)."""
    transport = _UnixTransport(root, uid, timeout)
    return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=transport)


def alive(root, uid=None):
    try:
        return proxy(root, timeout=2, uid=uid).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Error, TypeError, KeyError):
        return False


def programs(root, uid=None):
    """{name: (statename, description)}; {} when supervisord does not answer. From
    outside, the answer is checked: names and states are short strings."""
    try:
        infos = proxy(root, uid=uid).supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error):
        return {}
    result = {}
    if not isinstance(infos, list):
        return {}
    for info in infos[:1000]:
        if not isinstance(info, dict):
            continue
        name, state, description = info.get("name"), info.get("statename"), info.get("description", "")
        if isinstance(name, str) and isinstance(state, str):
            result[name[:128]] = (state[:32], str(description)[:500])
    return result


def run_promises(root, names, uid=None, timeout=130):
    """The named promises, run by the partition's supervisord (``deploy/rpc.py``)."""
    return proxy(root, timeout=timeout, uid=uid).slapnode.runPromises(sorted(names))


def reload(root, uid=None):
    """Pick up added, changed and removed program files; start what is new."""
    server = proxy(root, uid=uid, timeout=STOP_TIMEOUT)
    added, changed, removed = server.supervisor.reloadConfig()[0]
    for name in removed + changed:
        try:
            server.supervisor.stopProcessGroup(name)
        except xmlrpc.client.Fault:
            pass
        server.supervisor.removeProcessGroup(name)
    for name in changed + added:
        server.supervisor.addProcessGroup(name)
    return added, changed, removed


def start_all(root, include_fatal=False, uid=None):
    """Start programs that are stopped. FATAL ones (a crash loop) only when asked:
    the agent retries those with its own capped backoff."""
    server = proxy(root, uid=uid)
    for name, (state, _) in programs(root, uid=uid).items():
        if state == "FATAL" and not include_fatal:
            continue
        if state not in RUNNING_STATES | {"STARTING", "BACKOFF"}:
            try:
                server.supervisor.startProcess(name, False)
            except xmlrpc.client.Fault:
                pass


def stop_all(root, uid=None, timeout=None):
    """Every program stopped with its stop signal, waiting for them (at most
    ``timeout`` seconds when given; the caller kills what is left). The wait is
    ours, polling every STOP_POLL s: supervisord answers a waiting call only at its
    next loop turn, up to a second after the last program stopped."""
    deadline = time.monotonic() + (timeout or 10)
    try:
        proxy(root, timeout=timeout or 10, uid=uid).supervisor.stopAllProcesses(False)
    except (OSError, xmlrpc.client.Error):
        return
    while time.monotonic() < deadline:
        states = programs(root, uid=uid)
        if not any(state in STOPPING_STATES for state, _ in states.values()):
            return
        time.sleep(STOP_POLL)


def shutdown(root, uid=None):
    try:
        proxy(root, timeout=5, uid=uid).supervisor.shutdown()
    except (OSError, xmlrpc.client.Error):
        pass


def restart_all(root, uid=None, skip=()):
    """Restart every program (but ``skip``: those a reload just started), so that it
    reads its new configuration. A program that was only just spawned is never
    signalled: between fork and exec it would lose the signal and hold the stop for
    its whole stop-wait."""
    server = proxy(root, uid=uid, timeout=STOP_TIMEOUT)
    for name, (state, _) in programs(root, uid=uid).items():
        if name in skip:
            continue
        try:
            if state in RUNNING_STATES | {"STARTING", "BACKOFF"}:
                server.supervisor.stopProcess(name, True)
            server.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault:
            pass

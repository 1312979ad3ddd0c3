"""One supervisord per partition: its configuration, and talking to it.

Owns the supervisord.conf of a partition (pure: ``render``), where its socket
and logs live, and the XML-RPC calls over that unix socket (start, stop,
reload the programs, read their states).
"""

import http.client
import socket
import xmlrpc.client
from pathlib import Path

RUNNING_STATES = {"RUNNING"}
FAILED_STATES = {"FATAL", "EXITED", "UNKNOWN"}


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
    """supervisord.conf for the partition at ``root``."""
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

[supervisorctl]
serverurl = unix://{p['socket']}

[include]
files = {p['programs']}/*.conf
"""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path, timeout):
        super().__init__()
        self.path, self.timeout = str(path), timeout

    def make_connection(self, host):
        return _UnixConnection(self.path, self.timeout)


def proxy(root, timeout=10):
    """An XML-RPC proxy to the partition's supervisord."""
    transport = _UnixTransport(paths(root)["socket"], timeout)
    return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=transport)


def alive(root):
    try:
        return proxy(root, timeout=2).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Error):
        return False


def programs(root):
    """{name: (statename, description)}."""
    try:
        infos = proxy(root).supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error):
        return {}
    return {i["name"]: (i["statename"], i["description"]) for i in infos}


def reload(root):
    """Pick up added, changed and removed program files; start what is new."""
    server = proxy(root)
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


def start_all(root, include_fatal=False):
    """Start programs that are stopped. FATAL ones (a crash loop) only when asked:
    the agent retries those with its own capped backoff."""
    server = proxy(root)
    for name, (state, _) in programs(root).items():
        if state == "FATAL" and not include_fatal:
            continue
        if state not in RUNNING_STATES | {"STARTING", "BACKOFF"}:
            try:
                server.supervisor.startProcess(name, False)
            except xmlrpc.client.Fault:
                pass


def stop_all(root):
    try:
        proxy(root).supervisor.stopAllProcesses(True)
    except (OSError, xmlrpc.client.Error):
        pass


def shutdown(root):
    try:
        proxy(root, timeout=5).supervisor.shutdown()
    except (OSError, xmlrpc.client.Error):
        pass


def restart_all(root):
    """Restart every program, so that it reads its new configuration."""
    server = proxy(root)
    for name, (state, _) in programs(root).items():
        try:
            if state in RUNNING_STATES | {"STARTING", "BACKOFF"}:
                server.supervisor.stopProcess(name, True)
            server.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault:
            pass

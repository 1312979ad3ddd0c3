"""The node's resolver: instance names for its partitions, the rest upstream.

Owns one dnsmasq per node (Debian's; a real DNS server), listening on the
bridge's gateway addresses only: it answers the names of this node's instances
from a hosts file the agent keeps (A with the private IPv4, AAAA with the
IPv6), forwards the other names of the master's zone to the master's DNS server
(AAAA only: a private IPv4 means nothing off its node), and everything else to
the machine's own resolvers, unless ``outbound = none``. Started and kept
running by the agent (it knows the zone from the desired state), stopped by
``node unformat``. Partitions' containers get a resolv.conf pointing at it.
"""

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .. import nodeconfig, proc
from ..errors import SlapnodeError

DNSMASQ = shutil.which("dnsmasq", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/dnsmasq"
RETRY_AFTER = 60.0          # a resolver that would not start is tried again this much later
_failed_at = {}


def directory(config, make=True):
    """The resolver's files: readable by dnsmasq once it dropped its privileges, so not
    in the (private) state directory."""
    return proc.runtime_dir("node-dns", config.state_dir, make)


def upstream(config):
    """The resolvers names outside the zone go to: the config's, else the machine's."""
    if config.dns_upstream:
        return [s.strip() for s in config.dns_upstream.split(",") if s.strip()]
    servers = []
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                servers.append(words[1])
    except OSError:
        pass
    return servers


def hosts_text(entries):
    """The hosts file of this node's instances: [(fqdn, ipv4, ipv6)] -> text. Pure."""
    lines = []
    for name, ipv4, ipv6 in sorted(e for e in entries if e[0]):
        lines += [f"{ipv4} {name}", f"{ipv6} {name}"]
    return "\n".join(lines) + ("\n" if lines else "")


def args(config, zone, servers, upstream_servers):
    """dnsmasq's command line. Pure. ``servers``: the master's DNS ("host#port")."""
    d = directory(config, make=False)      # (a pure reading: ensure makes it)
    user = "dnsmasq"
    try:
        pwd.getpwnam(user)
    except KeyError:
        user = "nobody"
    line = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts",
            "--no-resolv", "--bind-interfaces",
            f"--listen-address={nodeconfig.gateway_v4(config)}",
            f"--listen-address={nodeconfig.gateway_v6(config)}",
            f"--hostsdir={d / 'hosts'}", f"--pid-file={d / 'dnsmasq.pid'}",
            f"--user={user}", "--cache-size=1000", "--domain-needed", "--bogus-priv",
            # no log (a line per reload would grow without end); a failure to start still
            # goes to stderr, kept in dnsmasq.out
            "--log-facility=/dev/null"]
    if servers:
        line += [f"--server=/{zone}/{server}" for server in servers]
    elif zone:
        line.append(f"--local=/{zone}/")
    if nodeconfig.parse_outbound(config.outbound) != "none":
        line += [f"--server={server}" for server in upstream_servers]
    return line


def _pid(config):
    try:
        pid = int((directory(config, make=False) / "dnsmasq.pid").read_text().strip())
        os.kill(pid, 0)
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            if b"dnsmasq" not in stream.read():
                return None
        return pid
    except (OSError, ValueError):
        return None


def write_hosts(config, entries):
    """Put this node's instance names in place; dnsmasq picks the change up by itself."""
    hosts = directory(config) / "hosts"
    hosts.mkdir(parents=True, exist_ok=True)
    path = hosts / "partitions"
    text = hosts_text(entries)
    if path.exists() and path.read_text() == text:
        return False
    tmp = directory(config) / ".partitions.tmp"      # written outside the watched directory
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def ensure(config, zone, servers):
    """dnsmasq running with the right arguments (restarted when they changed). One that
    would not start raises SlapnodeError with its reason, and is not tried again
    before RETRY_AFTER seconds."""
    d = directory(config)
    if time.monotonic() - _failed_at.get(str(d), -RETRY_AFTER) < RETRY_AFTER:
        return False
    (d / "hosts").mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    wanted = args(config, zone, servers, upstream(config))
    recorded = d / "args.json"
    pid = _pid(config)
    if pid is not None:
        try:
            if json.loads(recorded.read_text()) == wanted:
                return False
        except (OSError, ValueError):
            pass
        stop(config)
    out = d / "dnsmasq.out"
    if out.exists() and out.stat().st_size > (1 << 20):
        out.write_text("")
    argv = (["ip", "netns", "exec", config.netns] if config.netns else []) + wanted
    with open(out, "ab") as log:
        proc.spawn_detached(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, env=proc.clean_env("/"))
    recorded.write_text(json.dumps(wanted))
    deadline = time.monotonic() + 5
    while _pid(config) is None:
        if time.monotonic() > deadline:
            _failed_at[str(d)] = time.monotonic()
            lines = out.read_text(errors="replace").strip().splitlines()
            raise SlapnodeError(f"dnsmasq did not start: {lines[-1] if lines else 'no reason given'}")
        time.sleep(0.02)
    return True


def stop(config, forget=False):
    """Stop the node's resolver; ``forget``: also remove its files (unformat)."""
    pid = _pid(config)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _pid(config) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        if _pid(config) is not None:
            os.kill(pid, signal.SIGKILL)
    if forget:
        shutil.rmtree(directory(config, make=False), ignore_errors=True)


def resolv_conf(config, zone):
    """A partition's resolv.conf: this node's resolver, the zone to search. Pure."""
    if not config.dns:
        return ("# this node runs no resolver (dns = false): lookups fail at once\n"
                "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    search = f"search {zone}\n" if zone else ""
    return (f"nameserver {nodeconfig.gateway_v4(config)}\n"
            f"nameserver {nodeconfig.gateway_v6(config)}\n{search}"
            "options timeout:2 attempts:2\n")

"""Partitions on a real network, in a small internet of the test's own.

Network namespaces made here: an upstream (a router of its own, with a DNS
server authoritative for ``example.test``, an HTTP server and a TCP echo
server, on documentation addresses) and two nodes, each in its namespace with
an uplink into the upstream; their agents run inside their namespaces
(``nsenter --net``), with LXC isolation. The master runs in the test's own
namespace, on an address of a veth into the upstream that the test made. No
packet of these tests is sent to any address outside the namespaces and
interfaces made here.
"""

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from slapnode import nodeconfig
from slapnode.client import Client
from slapnode.errors import MasterError

from .conftest import (PG_URL, REQUIRE_PG, free_port, fresh_pg_database, require_lxc,
                       require_pg, sh, slapnode_cmd, stop_group, unique_name)
from .test_instances_system import _remove_ours
from .security.conftest import write_release
from .test_releases_system import JOB as CONDOR_JOB

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

def _free_documentation_net():
    """A documentation /24 this machine uses for nothing: not on its interfaces or
    routes, not its resolver's, not where its package mirrors resolve (a sandbox may
    put its own proxy in one of them). The test's "internet" lives there."""
    import ipaddress

    used = set()
    for line in subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True,
                               text=True).stdout.splitlines():
        used.add(ipaddress.ip_network(line.split()[3], strict=False))
    for line in subprocess.run(["ip", "-4", "route"], capture_output=True,
                               text=True).stdout.splitlines():
        if line.split()[0] != "default":
            used.add(ipaddress.ip_network(line.split()[0], strict=False))
    seen = []
    try:
        seen += [l.split()[1] for l in Path("/etc/resolv.conf").read_text().splitlines()
                 if l.startswith("nameserver")]
    except OSError:
        pass
    for name in ("deb.debian.org", "pypi.org", "files.pythonhosted.org"):
        try:
            seen += [info[4][0] for info in socket.getaddrinfo(name, 80, socket.AF_INET)]
        except OSError:
            pass
    for candidate in ("198.51.100.0/24", "192.0.2.0/24", "203.0.113.0/24"):
        net = ipaddress.ip_network(candidate)
        if not any(net.overlaps(u) for u in used) and \
                not any(ipaddress.ip_address(a) in net for a in seen):
            return str(net.network_address).rsplit(".", 1)[0]
    pytest.skip("every documentation network is in use on this machine")


P = _free_documentation_net() if os.geteuid() == 0 else "198.51.100"
UP4, UP6 = f"{P}.1", "2001:db8:ff::1"                # the upstream ("the internet")
HOST4 = f"{P}.254"                                    # the master, in the test's namespace
PRIVATE4 = "192.168.77.1"                            # a private network the upstream also has
NODES = {"a": (f"{P}.10", "2001:db8:ff::10"), "b": (f"{P}.20", "2001:db8:ff::20"),
         "c": (f"{P}.30", "2001:db8:ff::30")}
# node c's partitions have routed global IPv6 addresses (the upstream routes this /64 to
# node c); nodes a and b have ULA addresses, masqueraded on the way out
ROUTED6 = "2001:db8:ff:c00::/64"
BOINC_MASTER = ('<html><head><title>Test project</title></head><body>\n'
                '<!-- <scheduler>http://www.example.test/boinc_cgi/cgi</scheduler> -->\n'
                '<scheduler>http://www.example.test/boinc_cgi/cgi</scheduler>\n</body></html>\n')


CGROUPS = Path("/run/slapnode-test-cgroups")


def in_ns(ns, *cmd):
    """``cmd`` in network namespace ``ns``, as a node there sees the machine: its own
    /sys (LXC finds the namespace's bridge there) with the machine's cgroups (which
    `ip netns exec` would hide), in a mount namespace of its own that ends with it."""
    CGROUPS.mkdir(exist_ok=True)
    inner = 'mount -t sysfs sysfs /sys && mount --rbind "$0" /sys/fs/cgroup && exec "$@"'
    script = (f'set -e; mount --rbind /sys/fs/cgroup {CGROUPS}; '
              f'exec nsenter --net=/run/netns/{ns} -- sh -c \'{inner}\' {CGROUPS} "$@"')
    return ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script, "sh",
            *map(str, cmd)]


UPSTREAM_HTTP = r'''
import http.server, json, sys
LOG = sys.argv[1]
PAGE = open(sys.argv[2]).read().encode()
class Handler(http.server.BaseHTTPRequestHandler):
    def _log(self, body=b""):
        with open(LOG, "a") as f:
            f.write(json.dumps({"client": self.client_address[0], "method": self.command,
                                "path": self.path}) + "\n")
    def do_GET(self):
        self._log()
        body = PAGE if self.path.startswith("/boinc") else b"upstream says hello\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._log()
        body = b"<scheduler_reply>\n<message priority=\"low\">test project</message>\n<request_delay>60</request_delay>\n</scheduler_reply>\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
Server(("0.0.0.0", 80), Handler).serve_forever()
'''


@dataclass
class Net:
    tag: str
    base: Path
    upstream: str
    nodes: dict                 # "a" -> NodeHandle
    master_url: str
    admin: str
    processes: list
    http_log: Path
    ports: tuple = ()
    db: str = None

    def client(self, token=None):
        return Client(self.master_url, token or self.admin, retries=0)

    def http_requests(self):
        try:
            return [json.loads(l) for l in self.http_log.read_text().splitlines() if l.strip()]
        except OSError:
            return []


@dataclass
class NodeHandle:
    key: str
    ns: str
    config_path: Path
    agent: subprocess.Popen = None

    @property
    def config(self):
        return nodeconfig.load(self.config_path)

    def run(self, *cmd, check=False, timeout=30):
        return subprocess.run(in_ns(self.ns, *cmd), capture_output=True, text=True,
                              check=check, timeout=timeout)

    def partition_of(self, view):
        from slapnode.deploy.partition import parts_of

        return parts_of(self.config)[view["partition"]]

    def inside(self, view, *cmd, timeout=30):
        """``cmd`` inside the instance's container, as its partition user."""
        part = self.partition_of(view)
        return self.run("lxc-attach", "-n", f"slapnode-{part.user}", "-u", part.uid, "-g",
                        part.gid, "--clear-env", "--", *cmd, timeout=timeout)


def _wait(check, seconds, what, detail=None):
    """Until ``check()``; else fail saying ``what`` (and ``detail()``: what was seen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError, KeyError, MasterError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f"; {detail()}" if detail else ""))


def _start_upstream(net_name, base, processes):
    sh("ip", "netns", "add", net_name)
    sh("ip", "link", "add", "upbr", "type", "bridge", ns=net_name)
    sh("ip", "addr", "add", f"{UP4}/24", "dev", "upbr", ns=net_name)
    sh("ip", "addr", "add", f"{PRIVATE4}/24", "dev", "upbr", ns=net_name)
    sh("ip", "-6", "addr", "add", f"{UP6}/64", "dev", "upbr", "nodad", ns=net_name)
    sh("ip", "link", "set", "upbr", "up", ns=net_name)
    # the upstream routes node c's IPv6 range to node c (a router: it forwards)
    sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=net_name)
    sh("ip", "link", "set", "lo", "up", ns=net_name)
    (base / "boinc.html").write_text(BOINC_MASTER)
    log = base / "http.log"
    processes.append(subprocess.Popen(in_ns(net_name, sys.executable, "-c", UPSTREAM_HTTP, log,
                                            base / "boinc.html"),
                                      start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    processes.append(subprocess.Popen(in_ns(
        net_name, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts",
        "--no-resolv", f"--listen-address={UP4}", "--bind-interfaces", "--user=nobody",
        f"--host-record=www.example.test,{UP4},{UP6}", "--local=/example.test/",
        f"--host-record=private.example.test,{PRIVATE4}", "--log-facility=-"),
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    processes.append(subprocess.Popen(in_ns(net_name, "socat", f"TCP4-LISTEN:7,bind={UP4},fork,"
                                            "reuseaddr", "EXEC:cat"),
                                      start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    return log


def _plug(upstream, ns, host_if, up_if, address4, address6, host_netns=True):
    """A veth from ``ns`` (or the test's own namespace) into the upstream bridge."""
    sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", up_if)
    sh("ip", "link", "set", up_if, "netns", upstream)
    sh("ip", "link", "set", up_if, "master", "upbr", "up", ns=upstream)
    if not host_netns:
        sh("ip", "link", "set", host_if, "netns", ns)
    where = None if host_netns else ns
    sh("ip", "addr", "add", f"{address4}/24", "dev", host_if, ns=where)
    if address6:
        sh("ip", "-6", "addr", "add", f"{address6}/64", "dev", host_if, "nodad", ns=where)
    sh("ip", "link", "set", host_if, "up", ns=where)
    if not host_netns:
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "route", "add", "default", "via", UP4, ns=ns)
        sh("ip", "-6", "route", "add", "default", "via", UP6, ns=ns)


def _serve(base, port, dns_port):
    log = open(base / "master.log", "a")
    return subprocess.Popen(slapnode_cmd("master", "serve", "--data-dir", base / "master",
                                         "--listen", f"{HOST4}:{port}", "--log-level", "warning",
                                         "--dns", f"{HOST4}:{dns_port}", "--insecure-http"),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _start_master(base, processes, db=None):
    data = base / "master"
    init = subprocess.run(slapnode_cmd("master", "init", "--data-dir", data, "--domain",
                                       "grid.test", *(["--db", db] if db else [])),
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    port, dns_port = free_port(), free_port()
    processes.append(_serve(base, port, dns_port))
    url = f"http://{HOST4}:{port}"
    _wait(lambda: Client(url, retries=0).call("GET", "/health")["ok"], 30, "the master")
    return url, init.stdout.strip().splitlines()[-1], (port, dns_port)


def _make_node(net, key, index, partitions=6, do_format=True, routed6=None):
    ns = f"sn{net.tag}{key}"
    uplink4, uplink6 = NODES[key]
    sh("ip", "netns", "add", ns)
    _plug(net.upstream, ns, f"sn{net.tag}{key}u", f"up{net.tag}{key}", uplink4, uplink6,
          host_netns=False)
    name = unique_name(f"node{key}")
    token = net.client().create_enrollment_token(name, scope="public")["token"]
    base = net.base / key
    base.mkdir()
    os.chmod(base, 0o755)
    path = base / "node.cfg"
    register = subprocess.run(in_ns(ns, *slapnode_cmd(
        "node", "register", "--master", net.master_url, "--token", token, "--config", path,
        "--partitions", partitions, "--user-prefix", f"sn{net.tag}{key}", "--instance-root",
        base / "srv", "--software-root", net.base / "software", "--bridge", f"snb{net.tag}{key}",
        "--ipv4-range", f"10.{240 + index}.{secrets.randbelow(250)}.0/24", "--ipv6-range",
        routed6 or f"fd5a:{net.tag[:4]}:{index}::/64", "--isolation", "lxc", "--state-dir", base / "state")),
        capture_output=True, text=True, timeout=120)
    assert register.returncode == 0, register.stderr
    config = nodeconfig.load(path)
    assert config.ipv6_source == ("global" if routed6 else "ula")
    if routed6:
        sh("ip", "-6", "route", "add", routed6, "via", uplink6, ns=net.upstream)
    config.software_user = f"sn{net.tag}s"
    config.dns_upstream = UP4
    nodeconfig.save(config, path)
    handle = NodeHandle(key, ns, path)
    if do_format:
        formatted = handle.run(*slapnode_cmd("node", "format", "--config", path), timeout=600)
        assert formatted.returncode == 0, formatted.stderr
    return handle


def _start_agent(net, node):
    log = open(net.base / f"agent-{node.key}.log", "w")
    node.agent = subprocess.Popen(in_ns(node.ns, *slapnode_cmd(
        "node", "run", "--config", node.config_path, "--poll-wait", "5")),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def net():
    """The small internet: upstream, the master, two nodes with their agents."""
    require_lxc()
    for tool in ("nsenter", "dnsmasq", "socat", "nft", "dig"):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            pytest.fail(f"{tool} is missing (bash install.sh test installs it)")
    tag = secrets.token_hex(2)
    base = Path(tempfile.mkdtemp(prefix="slapnode-net-"))
    os.chmod(base, 0o755)
    upstream = f"sn{tag}up"
    processes, handle = [], None
    # on PostgreSQL when the tests have it: what a real grid runs on, and it can be restarted
    if REQUIRE_PG:
        require_pg()
    databases = contextlib.ExitStack()
    db = databases.enter_context(fresh_pg_database("slapnode_net")) if PG_URL else None
    try:
        http_log = _start_upstream(upstream, base, processes)
        _plug(upstream, None, f"sn{tag}h", f"up{tag}h", HOST4, None)
        url, admin, ports = _start_master(base, processes, db)
        handle = Net(tag, base, upstream, {}, url, admin, processes, http_log, ports, db)
        _wait(lambda: sh("dig", "+short", "+time=1", f"@{UP4}", "www.example.test",
                         ns=upstream, check=False).stdout.strip() == UP4, 20, "the upstream DNS")
        for index, key in enumerate(("a", "b")):
            handle.nodes[key] = _make_node(handle, key, index)
        handle.nodes["c"] = _make_node(handle, "c", 2, partitions=2, routed6=ROUTED6)
        for release in ("hello", "boinc-client", "condor"):
            handle.client().add_software(str(ROOT / "software-releases" / release / "software.cfg"),
                                         unique_name(release))
        for node in handle.nodes.values():
            _start_agent(handle, node)
        yield handle
    finally:
        _teardown(tag, base, upstream, handle, processes)
        databases.close()


def _teardown(tag, base, upstream, handle, processes):
    nodes = handle.nodes.values() if handle else []
    for node in nodes:
        if node.agent is not None:
            stop_group(node.agent)
    for node in nodes:
        config = node.config
        from slapnode.deploy import isolation as isolation_mod
        from slapnode.deploy.partition import parts_of

        for part in parts_of(config).values():
            node.run("lxc-stop", "-n", f"slapnode-{part.user}", "--kill")
            isolation_mod.kill_all(part.uid)
        node.run(*slapnode_cmd("node", "unformat", "--force", "--config", node.config_path),
                 timeout=120)
    for proc in processes:
        stop_group(proc, 5)
    from slapnode.proc import runtime_dir

    # (a master killed before its own shutdown leaves its zone's runtime files)
    shutil.rmtree(runtime_dir("master-dns", base / "master"), ignore_errors=True)
    for user in list(_users(f"sn{tag}")):
        _remove_ours(user, f"sn{tag}s")
    for ns in [f"sn{tag}a", f"sn{tag}b", f"sn{tag}c", upstream]:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", f"sn{tag}h"], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def _users(prefix):
    import pwd

    seen = set()
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix) and entry.pw_gecos.startswith("slapnode"):
            stem = entry.pw_name.rstrip("0123456789")
            if stem not in seen:
                seen.add(stem)
                yield stem


def _request(net, token, title, release, node_key, parameters=None, wait=120):
    client = net.client(token)
    node_name = nodeconfig.load(net.nodes[node_key].config_path).name
    software = str(ROOT / "software-releases" / release / "software.cfg") \
        if "/" not in release else release
    client.request_instance(title=title, software=software, parameters=parameters or {},
                            node={"computer": node_name})
    view = client.show_instance(title, wait=wait)
    assert view["status"] == "ready", (view, (net.base / f"agent-{node_key}.log").read_text()[-3000:])
    return view


def _release(net, name, instance_cfg):
    url = write_release(net.base, instance_cfg, name)
    net.client().add_software(url, unique_name(name))
    return url


@pytest.fixture(scope="module")
def user(net):
    return net.client().add_user(unique_name("ada"))["token"]


def test_a_partition_fetches_a_page_by_name_through_nat(net, user):
    view = _request(net, user, "fetcher", "hello", "a", {"name": "net"})
    node = net.nodes["a"]
    started = time.monotonic()
    fetch = node.inside(view, "/usr/bin/python3", "-c",
                        "import urllib.request; print(urllib.request.urlopen("
                        "'http://www.example.test/', timeout=10).read().decode())")
    assert fetch.returncode == 0 and "upstream says hello" in fetch.stdout, fetch.stderr
    assert time.monotonic() - started < 10
    clients = {r["client"] for r in net.http_requests() if r["path"] == "/"}
    assert NODES["a"][0] in clients                      # the node's address, through NAT ...
    assert view["ipv4"] not in clients                   # ... never the partition's


def test_outbound_refuses_private_ranges_and_none_refuses_everything(net, user):
    view = _request(net, user, "closed", "hello", "a", {"name": "closed"})
    node = net.nodes["a"]
    probe = ("import socket, sys, time\nt = time.monotonic()\n"
             "try:\n    socket.create_connection((sys.argv[1], 80), 5)\n    print('open')\n"
             "except OSError as e:\n    print('refused', type(e).__name__)\n"
             "print(round(time.monotonic() - t, 2))\n")
    private = node.inside(view, "/usr/bin/python3", "-c", probe, PRIVATE4)
    assert private.stdout.startswith("refused"), private.stdout + private.stderr
    assert float(private.stdout.split()[-1]) < 1.0       # at once, not a time-out
    config = node.config
    config.outbound = "none"
    nodeconfig.save(config, node.config_path)
    try:
        assert node.run(*slapnode_cmd("node", "format", "--config", node.config_path),
                        timeout=120).returncode == 0
        closed = node.inside(view, "/usr/bin/python3", "-c", probe, UP4)
        assert closed.stdout.startswith("refused") and float(closed.stdout.split()[-1]) < 1.0
    finally:
        config.outbound = "internet"
        nodeconfig.save(config, node.config_path)
        node.run(*slapnode_cmd("node", "format", "--config", node.config_path), timeout=120)
    reopened = node.inside(view, "/usr/bin/python3", "-c", probe, UP4)
    assert reopened.stdout.startswith("open"), reopened.stdout


def _addresses(result):
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}


def test_instance_names_resolve_on_their_node_and_across_nodes(net, user):
    here = _request(net, user, "web-a", "hello", "a", {"name": "a"})
    there = _request(net, user, "web-b", "hello", "b", {"name": "b"})
    assert here["hostname"].endswith(".grid.test") and here["connection"]["hostname"]
    node = net.nodes["a"]
    same = node.inside(here, "getent", "ahosts", here["hostname"])
    assert _addresses(same) == {here["ipv4"], here["ipv6"]}
    try:
        _wait(lambda: _addresses(node.inside(here, "getent", "ahosts", there["hostname"])) ==
              {there["ipv6"]}, 20, "the other node's name in the master's zone")
    except AssertionError:
        from slapnode.proc import runtime_dir
        zone = runtime_dir("master-dns", net.base / "master") / "hosts" / "zone"
        servers = net.client().call("GET", "/health")
        diag = [zone.read_text() if zone.exists() else "no zone file",
                node.inside(here, "dig", "AAAA", there["hostname"]).stdout,
                node.run("cat", str(runtime_dir("node-dns", node.config.state_dir) / "args.json")).stdout,
                (net.base / "master.log").read_text()[-1500:], str(servers)]
        raise AssertionError("\n---\n".join(diag))
    started = time.monotonic()
    timed = node.inside(here, "dig", "+short", "AAAA", there["hostname"])
    assert timed.stdout.strip() == there["ipv6"]
    assert time.monotonic() - started < 1.0     # (lookup time itself is in bench/network_bench.py)
    name = node.inside(here, "hostname")
    assert name.stdout.strip() == here["hostname"]
    hosts = node.inside(here, "cat", "/etc/hosts").stdout.splitlines()
    assert hosts[0].split()[:2] == [here["ipv4"], here["hostname"]]


REDIRECT = """[buildout]
parts = v4-only v6-only to-v6 to-v4 publish
[v4-only]
recipe = slapnode:service
command = /usr/bin/python3 -m http.server 8081 --bind ${slap-configuration:ipv4} --directory /usr/share/doc/python3
[v6-only]
recipe = slapnode:service
command = /usr/bin/python3 -m http.server 8082 --bind ${slap-configuration:ipv6} --directory /usr/share/doc/python3
[to-v6]
recipe = slapnode:redirect
source = [${slap-configuration:ipv6}]:8081
target = ${slap-configuration:ipv4}:8081
[to-v4]
recipe = slapnode:redirect
source = ${slap-configuration:ipv4}:8082
target = [${slap-configuration:ipv6}]:8082
[publish]
recipe = slapnode:publish
ok = yes
"""


def test_a_service_on_one_family_is_reached_on_the_other(net, user):
    url = _release(net, "redirect", REDIRECT)
    view = _request(net, user, "both", url, "a")
    node = net.nodes["a"]
    check = ("import sys, urllib.request\nprint(urllib.request.urlopen(sys.argv[1], "
             "timeout=5).status)\n")
    for target in (f"http://[{view['ipv6']}]:8081/", f"http://{view['ipv4']}:8082/"):
        _wait(lambda: node.run(sys.executable, "-c", check, target).stdout.strip() == "200", 20,
              f"{target} through the redirection")


def test_a_forwarded_port_reaches_the_partition_until_it_is_destroyed(net, user):
    url = _release(net, "forwarded", """[buildout]
parts = web page forward
[page]
recipe = slapnode:template
output = ${slap-configuration:partition-root}/srv/index.html
inline = forwarded
[web]
recipe = slapnode:service
command = /usr/bin/python3 -m http.server 8080 --bind ${slap-configuration:ipv4} --directory ${slap-configuration:partition-root}/srv
[forward]
recipe = slapnode:forward
port = 8080
""")
    view = _request(net, user, "public", url, "a")
    address = view["connection"]["forward"]
    host, port = address.rsplit(":", 1)
    assert host == NODES["a"][0] and 20000 <= int(port) <= 29999
    fetch = ("import sys, urllib.request\ntry:\n print(urllib.request.urlopen(sys.argv[1], "
             "timeout=3).read().decode())\nexcept OSError as e:\n print('failed', e)\n")
    from_upstream = lambda: sh(sys.executable, "-c", fetch, f"http://{address}/index.html",  # noqa: E731
                               ns=net.upstream, check=False).stdout
    _wait(lambda: from_upstream().strip() == "forwarded", 20, "the forwarded port")
    net.client(user).change_instance("public", "destroyed")
    assert net.client(user).show_instance("public", wait=60)["status"] == "destroyed"
    assert from_upstream().startswith("failed")
    state = json.loads((net.base / "a" / "state" / "forwards.json").read_text())
    assert view["partition"] not in state


def _client_messages(net, view):
    """The BOINC client's own messages (its log file is buffered), the last 30 lines."""
    conn = view["connection"]
    try:
        out = net.nodes["b"].run(conn["boinccmd"], "--host", f"{conn['remote_host']}:{conn['rpc_port']}",
                                 "--passwd", conn["rpc_passwd"], "--get_messages")
    except subprocess.TimeoutExpired:
        return "(boinccmd timed out)"
    return "\n".join((out.stdout + out.stderr).splitlines()[-30:])


def test_the_boinc_client_attaches_to_a_project_through_nat_and_dns(net, user):
    url = str(ROOT / "software-releases" / "boinc-client" / "software.cfg")
    prebuilt = subprocess.run(slapnode_cmd("software", "build", url, "--software-root",
                                           net.base / "software", "--user", f"sn{net.tag}s"),
                              capture_output=True, text=True, timeout=900)
    logs = "".join(p.read_text()[-3000:] for p in (net.base / "software").glob("*/.build.log"))
    assert prebuilt.returncode == 0, prebuilt.stderr + logs   # (Debian's packages: the machine's network)
    view = _request(net, user, "cruncher", "boinc-client", "b",
                    {"boinc-project-url": "http://www.example.test/boinc/",
                     "boinc-account-key": "0123456789abcdef"}, wait=300)
    _wait(lambda: any(r["method"] == "POST" and r["path"].startswith("/boinc_cgi")
                      for r in net.http_requests()), 120, "the BOINC client's scheduler request",
          lambda: f"upstream HTTP saw {net.http_requests()}; the client says:\n"
                  f"{_client_messages(net, view)}")
    seen = [(r["method"], r["path"]) for r in net.http_requests() if r["client"] == NODES["b"][0]]
    assert ("GET", "/boinc/") in seen


def test_a_condor_worker_on_another_node_joins_the_pool_over_ipv6(net, user):
    """The manager on node c (routed IPv6), a worker on node a (ULA behind the node's
    NAT, reached back through the manager's connection broker): the worker's slots join
    the pool by name and token, and a job submitted on the manager runs on node a."""
    url = str(ROOT / "software-releases" / "condor" / "software.cfg")
    prebuilt = subprocess.run(slapnode_cmd("software", "build", url, "--software-root",
                                           net.base / "software", "--user", f"sn{net.tag}s"),
                              capture_output=True, text=True, timeout=900)
    assert prebuilt.returncode == 0, prebuilt.stderr       # (Debian's packages: the machine's network)
    manager = _request(net, user, "pool", "condor", "c", {"condor-role": "manager"}, wait=300)
    conn = manager["connection"]
    assert conn["condor_host"] == manager["hostname"]          # Condor talks by name
    worker = _request(net, user, "far", "condor", "a",
                      {"condor-role": "worker", "condor-host": conn["condor_host"],
                       "condor-token": conn["condor_token"]}, wait=300)
    node_c, node_a = net.nodes["c"], net.nodes["a"]
    far = node_a.partition_of(worker)
    slots = node_c.inside(manager, f"{conn['condor_bin']}/condor_status", "-af", "Name",
                          "SlapnodePartition")
    assert f"{far.user}@{node_a.config.name}" in slots.stdout, slots.stdout + slots.stderr
    machine = slots.stdout.split()[0].split("@", 1)[1]
    assert machine == worker["hostname"]

    part = node_c.partition_of(manager)
    jobs = part.root / "srv" / "jobs"
    script = (f"mkdir -p {jobs} && cat > {jobs}/far.sub <<'EOF'\n"
              + CONDOR_JOB.format(out=f"{jobs}/far.out") + f"EOF\n{conn['condor_submit']} {jobs}/far.sub")
    submitted = node_c.inside(manager, "/bin/sh", "-c", script)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    out = jobs / "far.out"
    _wait(lambda: out.read_text().strip(), 120, "the job's output from node a")
    assert out.read_text().strip() == f"hello from {worker['hostname']}"


MAILER = r"""[buildout]
parts = mail notify publish
[mail]
recipe = slapnode:sendmail
relay = ${slap-configuration:mail-relay}
[notify]
recipe = slapnode:service
command = /bin/sh -c "printf 'To: ops@example.test\nBcc: audit@example.test\nSubject: started\n\nthe service is up\n' | sendmail -t -oi; exec sleep 86400"
[publish]
recipe = slapnode:publish
mail-from = ${slap-configuration:mail-from}
relay = ${slap-configuration:mail-relay}
sendmail = ${mail:path}
"""
FLOOD = """import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
smtp = smtplib.SMTP(host, int(port), timeout=30)
for i in range(int(sys.argv[2])):
    smtp.sendmail("forged@bank.example", ["ops@example.test"], f"Subject: {i}\\r\\n\\r\\nunit {i}\\r\\n")
try:
    smtp.sendmail("forged@bank.example", ["ops@example.test"], "Subject: one more\\r\\n\\r\\nx\\r\\n")
    print("accepted")
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
"""
PROBE = """import smtplib, sys
try:
    smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=5).sendmail("a@b.example", ["ops@example.test"], "x")
    print("relayed")
except smtplib.SMTPResponseException as e:
    print("refused", e.smtp_code, e.smtp_error.decode())
except OSError as e:
    print("refused", type(e).__name__)
"""


def _caught(log, count, seconds=30):
    lines = []

    def enough():
        nonlocal lines
        lines = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
        return len(lines) >= count
    _wait(enough, seconds, f"{count} message(s) at the catcher")
    return lines


def test_partitions_send_mail_through_their_node_from_their_own_address(net, user):
    """sendmail in a partition -> the node's relay -> the master -> the smarthost (a
    catcher in the upstream): the instance's address, the header naming it, 100 an hour,
    and nobody else relays."""
    log = net.base / "caught.jsonl"
    catcher = subprocess.Popen(in_ns(net.upstream, sys.executable, ROOT / "tests" / "mailcatcher.py",
                                     UP4, 25, log), stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    net.processes.append(catcher)
    master_dir = net.base / "master"
    route = [f"{nodeconfig.load(net.nodes['b'].config_path).ipv4_range}", "via", NODES["b"][0]]
    try:
        assert catcher.stdout.readline().strip() == "ready"
        init = subprocess.run(slapnode_cmd("master", "init", "--data-dir", master_dir,
                                           "--smtp-relay", f"{UP4}:25", "--smtp-tls", "none"),
                              capture_output=True, text=True, timeout=120)
        assert init.returncode == 0, init.stderr
        url = _release(net, "mailer", MAILER)
        view = _request(net, user, "mailer", url, "b")
        node = net.nodes["b"]
        sender = view["connection"]["mail-from"]
        assert sender == f"{view['hostname'].split('.grid.test')[0]}@grid.test"
        # the service's own `sendmail -t` (found on its PATH) as it started
        [first] = _caught(log, 1)
        assert first["mail_from"] == sender
        assert sorted(first["rcpt_tos"]) == ["audit@example.test", "ops@example.test"]
        assert first["data"].startswith(f"X-Slapnode-Instance: {view['hostname']} (instance ")
        assert "Bcc" not in first["data"] and "the service is up" in first["data"]
        # 99 more in one connection (whatever sender they claim), then the 101st is refused
        flood = node.inside(view, "/usr/bin/python3", "-c", FLOOD, view["connection"]["relay"],
                            "99", timeout=120)
        assert flood.stdout.startswith("450 4.7.1 this partition sent 100 messages"), \
            flood.stdout + flood.stderr
        assert "mail_per_hour" in flood.stdout
        caught = _caught(log, 100)
        assert len(caught) == 100 and {m["mail_from"] for m in caught} == {sender}
        script = f"printf 'Subject: x\\n\\ny\\n' | {view['connection']['sendmail']} ops@example.test; echo rc=$?"
        refused = node.inside(view, "/bin/sh", "-c", script)
        assert "rc=75" in refused.stdout and "450 4.7.1" in refused.stderr, refused
        # an instance that did not declare it sends mail is told how to
        quiet = _request(net, user, "quiet", "hello", "b", {"name": "quiet"})
        told = node.inside(quiet, "/usr/bin/python3", "-c", PROBE,
                           view["connection"]["relay"].split(":")[0], "25")
        assert told.stdout.startswith("refused 550 5.7.1") and "recipe = slapnode:sendmail" \
            in told.stdout, told.stdout + told.stderr
        # nobody else relays: not the node itself, not a host of the upstream that routes
        # to the partitions' network
        gateway = str(nodeconfig.gateway_v4(node.config))
        assert node.run(sys.executable, "-c", PROBE, gateway, "25").stdout.startswith("refused")
        sh("ip", "route", "add", *route, ns=net.upstream)
        outside = sh(sys.executable, "-c", PROBE, gateway, "25", ns=net.upstream)
        assert outside.stdout.startswith("refused"), outside.stdout + outside.stderr
        assert len(_caught(log, 100)) == 100
        # the master counted, per hour, and kept no content
        sent = [e for e in net.client(user).instance_history("mailer") if e["action"] == "mail sent"]
        assert sum(e["detail"]["messages"] for e in sent) == 100
    finally:
        sh("ip", "route", "del", *route, ns=net.upstream, check=False)
        subprocess.run(slapnode_cmd("master", "init", "--data-dir", master_dir, "--smtp-relay",
                                    "none"), capture_output=True, timeout=120)
        stop_group(catcher, 5)


def _pg_cluster():
    """(version, name) of the PostgreSQL cluster the tests use."""
    line = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True,
                          text=True).stdout.split("\n")[0].split()
    return line[0], line[1]


def _ready_all(net, token, titles, seconds=180):
    client = net.client(token)
    views = {}

    def all_ready():
        views.update({v["title"]: v for v in client.list_instances() if v["title"] in titles})
        return all(views.get(t, {}).get("status") == "ready" for t in titles)
    _wait(all_ready, seconds, f"{titles} ready")
    return views


def test_three_nodes_share_the_requests_and_converge_after_restarts(net, user):
    """Requests fill the free partitions of the three nodes; a filter only one node meets
    lands there; the master restarted (and PostgreSQL restarted) loses no request, and no
    partition ever holds two instances."""
    client, admin = net.client(user), net.client()
    names = {key: node.config.name for key, node in net.nodes.items()}
    lab = unique_name("lab")
    admin.create_network(lab)
    admin.add_network_computer(lab, names["b"])
    hello = str(ROOT / "software-releases" / "hello" / "software.cfg")
    admin.request_instance(title="in-lab", software=hello, parameters={"name": "lab"},
                           node={"network": lab})          # (the admin's network, nodes)
    free = sum(c["free"] for c in admin.list_computers() if c["name"] in names.values())
    spread = [f"spread{i}" for i in range(free)]
    for title in spread:                # as many as there are free partitions, no filter
        client.request_instance(title=title, software=hello, parameters={"name": title})
    views = _ready_all(net, user, spread)
    assert _ready_all(net, net.admin, ["in-lab"])["in-lab"]["node"] == names["b"]
    assert len({views[t]["node"] for t in spread}) >= 2, views      # more than one node

    # a request just before the master stops, one while it is away: none is lost
    client.change_instance(spread[0], "destroyed")
    client.show_instance(spread[0], wait=60)
    client.request_instance(title="before-restart", software=hello, parameters={"name": "x"})
    master = next(p for p in net.processes if "serve" in p.args)
    stop_group(master)
    net.processes.remove(master)
    time.sleep(2)                       # the agents' polls fail, and they back off
    net.processes.append(_serve(net.base, *net.ports))
    _wait(lambda: Client(net.master_url, retries=0).call("GET", "/health")["ok"], 30,
          "the master, again")
    _ready_all(net, user, ["before-restart"])
    if net.db:                          # the database itself restarts under the master
        client.change_instance("before-restart", "destroyed")
        client.show_instance("before-restart", wait=60)
        subprocess.run(["pg_ctlcluster", *_pg_cluster(), "restart"], check=True, timeout=120)
        client.request_instance(title="after-pg", software=hello, parameters={"name": "y"})
        _ready_all(net, user, ["after-pg"])
    held = [(v["node"], v["partition"]) for v in client.list_instances() + admin.list_instances()
            if v["status"] != "destroyed" and v.get("partition")]
    assert len(held) == len(set(held)), "a partition holds two instances"


def test_unformat_leaves_no_table_resolver_or_route(net, user):
    node = net.nodes["b"]
    config = node.config
    # every agent stops: the nodes here share one software root and software user, which
    # unformat removes (the others would see their releases vanish and rebuild them)
    for each in net.nodes.values():
        if each.agent is not None:
            stop_group(each.agent)
            each.agent = None
    from slapnode.deploy.partition import parts_of

    for part in parts_of(config).values():
        node.run("lxc-stop", "-n", f"slapnode-{part.user}", "--kill")
    gone = node.run(*slapnode_cmd("node", "unformat", "--force", "--config", node.config_path),
                    timeout=120)
    assert gone.returncode == 0, gone.stderr
    assert node.run("nft", "list", "tables").stdout.strip() == ""
    assert not [line for line in node.run("ps", "-eo", "args").stdout.splitlines()
                if "dnsmasq" in line and config.state_dir in line]
    routes = node.run("ip", "-o", "route", "show").stdout + node.run("ip", "-o", "-6", "route",
                                                                     "show").stdout
    assert config.bridge not in routes
    assert node.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "0"

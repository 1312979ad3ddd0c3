"""Network benchmark, as root, in network namespaces of its own (the small internet of
tests/test_network_system.py: an upstream with DNS, two nodes with LXC partitions).

* rules: `node format` of a node with N partitions (default 100) from scratch, until every
  partition's rules are in place (its veth named in the bridge table), and the time to
  re-apply the rules alone (what a forwarded port's change costs);
* names: lookup latency from inside a partition (getaddrinfo, median and p99 of
  --lookups): a name of the same node, a name of the other node (through the master's
  DNS, then cached), a name outside the zone (through the upstream resolver, cached);
* redirection: throughput of one TCP connection to a partition's IPv4 service, direct,
  and through the `redirect` recipe (socat, from the partition's IPv6); ratio, target >= 0.8.

Every figure is checked to be what it names (the rules listed, the answers right, the
bytes all there) or the run stops. Medians of --runs where it says so.

    .venv/bin/python bench/network_bench.py [--partitions 100] [--runs 3] [--lookups 500]
"""

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import tests.test_network_system as T  # noqa: E402
from slapnode.deploy import isolation  # noqa: E402
from tests.conftest import slapnode_cmd, unique_name  # noqa: E402

from common import print_rows  # noqa: E402

LOOKUP = r'''
import socket, statistics, sys, time
name, count = sys.argv[1], int(sys.argv[2])
socket.getaddrinfo(name, 80)                      # the first one fills the caches
times = []
for _ in range(count):
    t = time.perf_counter(); socket.getaddrinfo(name, 80); times.append(time.perf_counter() - t)
times.sort()
print(statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000)
'''

SEND = r'''
import socket, sys, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
chunk = b"x" * (1 << 20)
s = socket.socket(family); s.connect((host, port))
t = time.perf_counter(); sent = 0
while sent < size:
    s.sendall(chunk); sent += len(chunk)
s.shutdown(socket.SHUT_WR)
got = int(s.recv(64).decode().strip())
took = time.perf_counter() - t
assert got == sent, (got, sent)
print(sent / took / 1e6)
'''

REAPPLY = r'''
import sys, time
from slapnode import nodeconfig
from slapnode.format import firewall
config = nodeconfig.load(sys.argv[1])
firewall.apply(config)          # the agent has its modules loaded: time the second one
t = time.perf_counter(); firewall.apply(config); print(time.perf_counter() - t)
'''

SINK = r'''
"""A TCP sink that answers with the number of bytes it got (as cheap per byte as a
service can be, so that the relay's own cost shows)."""
import socket, sys, threading
server = socket.create_server((sys.argv[1], int(sys.argv[2])), reuse_port=True)
def serve(conn):
    buffer, count = bytearray(1 << 20), 0
    while (got := conn.recv_into(buffer)):
        count += got
    conn.sendall(b"%d\n" % count)
    conn.close()
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
'''

SINK_SOFTWARE = """[buildout]
parts = sink instance
[sink]
recipe = slapnode:download
url = ${:_profile_base_location_}/sink.py
destination = ${buildout:directory}
[instance]
recipe = slapnode:template
url = ${:_profile_base_location_}/instance.cfg.in
output = ${buildout:directory}/instance.cfg
context = sink ${sink:destination}/sink.py
"""

SINK_INSTANCE = """[buildout]
parts = sink redirect publish
[sink]
recipe = slapnode:service
command = /usr/bin/python3 {{ sink }} ${slap-configuration:ipv4} 9000
[redirect]
recipe = slapnode:redirect
source = [${slap-configuration:ipv6}]:9000
target = ${slap-configuration:ipv4}:9000
[publish]
recipe = slapnode:publish
ok = yes
"""


def sink_release(net):
    """A release of the bench's own: the sink above and the redirect in front of it."""
    sr = net.base / "sink-sr"
    sr.mkdir()
    for name, text in (("sink.py", SINK), ("software.cfg", SINK_SOFTWARE),
                       ("instance.cfg.in", SINK_INSTANCE)):
        (sr / name).write_text(text)
    os.chmod(sr, 0o755)
    url = str(sr / "software.cfg")
    net.client().add_software(url, unique_name("sink"))
    return url


def throughput(node, view, runs, size):
    """Medians (MB/s) of one connection to the partition's IPv4 (direct) and to its IPv6
    (through the redirect), alternating."""
    direct, redirected = [], []
    for _ in range(runs):
        for host, bucket in ((view["ipv4"], direct), (view["ipv6"], redirected)):
            result = node.run(sys.executable, "-c", SEND, host, 9000, size, timeout=300)
            assert result.returncode == 0, result.stderr
            bucket.append(float(result.stdout))
    return statistics.median(direct), statistics.median(redirected)


def rules_bench(net, partitions, runs):
    """`node format` of a fresh node with N partitions until its rules are in place."""
    scratch, reapply = [], []
    for run in range(runs):
        key = f"r{run}"
        T.NODES[key] = (f"{T.P}.{30 + run}", f"2001:db8:ff::{30 + run:x}")
        node = T._make_node(net, key, 5 + run, partitions=partitions, do_format=False)
        path = node.config_path
        try:
            started = time.monotonic()
            formatted = node.run(*slapnode_cmd("node", "format", "--config", path), timeout=600)
            took = time.monotonic() - started
            assert formatted.returncode == 0, formatted.stderr
            table = node.run("nft", "list", "table", "bridge",
                             f"slapnode_snb{net.tag}{key}").stdout
            listed = table.count('"sv')
            if listed < partitions:
                raise RuntimeError(f"only {listed} of {partitions} partitions' rules are in place")
            scratch.append(took)
            # in one process, as the agent does it: imports are not part of the cost
            again = node.run(sys.executable, "-c", REAPPLY, path)
            assert again.returncode == 0, again.stderr
            reapply.append(float(again.stdout))
        finally:
            node.run(*slapnode_cmd("node", "unformat", "--force", "--config", path), timeout=600)
            subprocess.run(["ip", "netns", "del", node.ns], capture_output=True)
    return statistics.median(scratch), statistics.median(reapply)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument("--skip-rules", action="store_true",
                        help="measure names and redirection only")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    tag = secrets.token_hex(2)
    base = Path(tempfile.mkdtemp(prefix="snbench-net-"))
    os.chmod(base, 0o755)
    upstream = f"sn{tag}up"
    processes, net, rows = [], None, []
    try:
        log = T._start_upstream(upstream, base, processes)
        T._plug(upstream, None, f"sn{tag}h", f"up{tag}h", T.HOST4, None)
        url, admin = T._start_master(base, processes)
        net = T.Net(tag, base, upstream, {}, url, admin, processes, log)
        if not args.skip_rules:
            print(f"rules: node format of {args.partitions} partitions x {args.runs} ...",
                  flush=True)
            scratch, reapply = rules_bench(net, args.partitions, args.runs)
            rows.append({"measure": f"node format, {args.partitions} partitions, until "
                                    "every partition's rules are in place",
                         "value": f"{scratch:.2f} s", "target": "", "ok": "yes"})
            rows.append({"measure": "re-applying the rules (a forwarded port changed)",
                         "value": f"{reapply * 1000:.0f} ms", "target": "", "ok": "yes"})

        for index, key in enumerate(("a", "b")):
            net.nodes[key] = T._make_node(net, key, index)
        hello = str(ROOT / "software-releases" / "hello" / "software.cfg")
        net.client().add_software(hello, unique_name("hello"))
        for node in net.nodes.values():
            T._start_agent(net, node)
        user = net.client().add_user(unique_name("bench"))["token"]
        here = T._request(net, user, "here", "hello", "a", {"name": "a"})
        there = T._request(net, user, "there", "hello", "b", {"name": "b"})
        node = net.nodes["a"]
        print(f"names: {args.lookups} lookups x {args.runs} ...", flush=True)
        for label, name in (("same node", here["hostname"]), ("other node", there["hostname"]),
                            ("outside the zone", "www.example.test")):
            medians, p99s = [], []
            for _ in range(args.runs):
                result = node.inside(here, "/usr/bin/python3", "-c", LOOKUP, name, args.lookups,
                                     timeout=300)
                assert result.returncode == 0, result.stderr
                median, p99 = map(float, result.stdout.split())
                medians.append(median)
                p99s.append(p99)
            median, p99 = statistics.median(medians), statistics.median(p99s)
            rows.append({"measure": f"name lookup from a partition, {label} (median / p99)",
                         "value": f"{median:.2f} / {p99:.2f} ms", "target": "< 50 ms",
                         "ok": "yes" if p99 < 50 else "NO"})

        print(f"redirection: {args.megabytes} MB x {args.runs} ...", flush=True)
        view = T._request(net, user, "sink", sink_release(net), "a")
        size = args.megabytes << 20
        veth = isolation.veth_name(node.partition_of(view).uid)
        for label, shaped in (("as fast as the CPUs go", False), ("on a 1 Gbit/s link", True)):
            if shaped:     # the partition's port of the bridge, toward the partition
                node.run("tc", "qdisc", "add", "dev", veth, "root", "tbf", "rate", "1gbit",
                         "burst", "512kb", "latency", "20ms", check=True)
            try:
                direct, redirected = throughput(node, view, args.runs, size)
            finally:
                if shaped:
                    node.run("tc", "qdisc", "del", "dev", veth, "root")
            ratio = redirected / direct
            rows.append({"measure": f"one TCP connection {label}: direct to the partition's "
                                    "IPv4 / through the redirect (IPv6 -> IPv4, socat)",
                         "value": f"{direct:.0f} / {redirected:.0f} MB/s", "target": "",
                         "ok": "yes"})
            rows.append({"measure": f"redirected / direct, {label}", "value": f"{ratio:.2f}",
                         "target": ">= 0.8", "ok": "yes" if ratio >= 0.8 else "NO"})
    finally:
        T._teardown(tag, base, upstream, net, processes)
    print()
    print_rows(rows, [("measure", "measure"), ("value", "value"), ("target", "target"),
                      ("ok", "ok")])


if __name__ == "__main__":
    main()

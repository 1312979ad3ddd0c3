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

REDIRECT = """[buildout]
parts = sink redirect publish
# a TCP sink that answers with the number of bytes it got
[sink]
recipe = slapnode:service
command = /usr/bin/socat TCP4-LISTEN:9000,bind=${slap-configuration:ipv4},reuseaddr,fork SYSTEM:"wc -c"
[redirect]
recipe = slapnode:redirect
source = [${slap-configuration:ipv6}]:9000
target = ${slap-configuration:ipv4}:9000
[publish]
recipe = slapnode:publish
ok = yes
"""


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
            started = time.monotonic()
            again = node.run(sys.executable, "-c", "import sys; from slapnode import nodeconfig; "
                             "from slapnode.format import firewall; "
                             "firewall.apply(nodeconfig.load(sys.argv[1]))", path)
            assert again.returncode == 0, again.stderr
            reapply.append(time.monotonic() - started)
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
        print(f"rules: node format of {args.partitions} partitions x {args.runs} ...", flush=True)
        scratch, reapply = rules_bench(net, args.partitions, args.runs)
        rows.append({"measure": f"node format, {args.partitions} partitions, until every "
                                "partition's rules are in place", "value": f"{scratch:.2f} s",
                     "target": "", "ok": "yes"})
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
        view = T._request(net, user, "sink", T._release(net, "sink", REDIRECT), "a")
        size = args.megabytes << 20
        direct, redirected = [], []
        for _ in range(args.runs):
            for host, bucket in ((view["ipv4"], direct), (view["ipv6"], redirected)):
                result = node.run(sys.executable, "-c", SEND, host, 9000, size, timeout=300)
                assert result.returncode == 0, result.stderr
                bucket.append(float(result.stdout))
        ratio = statistics.median(redirected) / statistics.median(direct)
        rows.append({"measure": "one TCP connection, direct to the partition's IPv4",
                     "value": f"{statistics.median(direct):.0f} MB/s", "target": "", "ok": "yes"})
        rows.append({"measure": "the same through the redirect recipe (IPv6 -> IPv4, socat)",
                     "value": f"{statistics.median(redirected):.0f} MB/s",
                     "target": "", "ok": "yes"})
        rows.append({"measure": "redirected / direct", "value": f"{ratio:.2f}",
                     "target": ">= 0.8", "ok": "yes" if ratio >= 0.8 else "NO"})
    finally:
        T._teardown(tag, base, upstream, net, processes)
    print()
    print_rows(rows, [("measure", "measure"), ("value", "value"), ("target", "target"),
                      ("ok", "ok")])


if __name__ == "__main__":
    main()

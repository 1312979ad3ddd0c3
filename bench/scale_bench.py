"""Scale benchmark: many nodes on one master of one or two workers, bursts, three nodes.

* Simulated nodes (PostgreSQL, ``--db``): ``--nodes`` computers (5,000) enrolled through
  the API, each long-polling its desired state on a connection of its own (asyncio,
  bounded). With ``--workers 1`` and then 2: the master's RSS over all its processes;
  unchanged polls per second (wrk, keep-alive); change -> node woken latency, p50 and p99
  (a supply committed through the API wakes that node's parked poll, on whichever worker
  it is parked), measured once the fleet settled (``--settle``: their first polls answered
  and their first heartbeat written; ``--settle 3 --show-slowest 5`` shows the warm-up).
* Burst (root, LXC): ``--burst`` (50) hello instances requested at once on a node with as
  many free partitions: time from the first request to the first and to the last ready
  (watched by one long-poll per instance); once with the default 2 partitions kept warm,
  once with every free partition warm beforehand (``warm_partitions = 50``, about 25 MB
  each: what a node dedicated to bursts would set).
* With ``--slapos``: the same burst with slapos.core (the anchor's set-up from
  ../shared/anchors/slapos, ``bench/slapos_burst.sh.in``: ``--burst`` partitions formatted,
  as many ``slapos request`` at once, ``slapos node instance`` passes until every instance
  answers HTTP 200), run before ours in the same go, and the ratio.
* Three nodes (root, LXC): ``--per-node`` (50) partitions on each of three nodes, as many
  instances as partitions requested at once: requests placed per second, time to all ready.

Targets (issue 18): RSS < 300 MB over all workers with 5,000 nodes; >= 1,000 polls/s and
more with 2 workers than with 1; wake-up p99 < 100 ms; a burst of 50 ready < 10 s.

    .venv/bin/python bench/scale_bench.py --db postgresql+psycopg://u:pw@127.0.0.1/postgres
        [--nodes 5000] [--samples 200] [--burst 50] [--per-node 50] [--skip-nodes]
"""

import argparse
import asyncio
import concurrent.futures
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import start_master, stop_group, stop_process  # noqa: E402

from slapnode.client import Client  # noqa: E402
from slapnode.deploy import deployer  # noqa: E402
from slapnode.deploy.partition import parts_of  # noqa: E402

from common import (SLAPNODE, Gone, make_node, print_rows, pss_mb, remove_node,  # noqa: E402
                    rss_mb, slapos_anchor, timed)
from master_bench import wrk  # noqa: E402


# -- simulated nodes -----------------------------------------------------------------------

def process_tree_memory(pid):
    """(RSS, PSS) in MB of ``pid`` and of every process below it (the master's workers).
    RSS counts the pages the workers share (the interpreter, the C extensions) once per
    worker; PSS shares them out."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stream:
                    parent = int(stream.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, ValueError):
                pass
    rss = pss = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            rss += rss_mb(current)
            pss += pss_mb(current)
        except Gone:
            pass
        todo += children.get(current, [])
    return rss, pss


async def _response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return json.loads(await reader.readexactly(length)) if length else None


class Fleet:
    """``credentials`` long-polling, each on its connection."""

    def __init__(self, host, port, credentials):
        self.host, self.port, self.credentials = host, port, credentials
        self.conns = {}

    async def park(self, index, revision):
        reader, writer = self.conns.get(index) or await asyncio.open_connection(self.host, self.port)
        self.conns[index] = (reader, writer)
        writer.write((f"GET /api/v1/node/desired-state?after={revision}&wait=120 HTTP/1.1\r\n"
                      f"Host: {self.host}\r\nAuthorization: Bearer {self.credentials[index]}\r\n\r\n")
                     .encode())
        await writer.drain()

    async def park_all(self, revisions):
        sem = asyncio.Semaphore(200)

        async def one(i):
            async with sem:
                await self.park(i, revisions[i])
        await asyncio.gather(*(one(i) for i in range(len(self.credentials))))

    def close(self):
        for _, writer in self.conns.values():
            writer.close()
        self.conns = {}


def enroll_nodes(client, url, count):
    """(credentials, revisions) of ``count`` new computers."""
    def one(i):
        name = f"sim{secrets.token_hex(4)}{i}"
        token = client.create_enrollment_token(name, scope="public")["token"]
        node = Client(url, Client(url, retries=0).enroll(token)["credential"], retries=0)
        return node.token, node.desired_state()["revision"], name
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(count)))


def simulated(args, base):
    """Rows for 1 and 2 workers, on one PostgreSQL database of its own."""
    from sqlalchemy import create_engine, text

    name = f"slapnode_scale_{secrets.token_hex(4)}"
    admin_engine = create_engine(args.db, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    db = f"{args.db.rsplit('/', 1)[0]}/{name}"
    rows, nodes = [], None
    try:
        for workers in args.worker_counts:
            proc, url, admin = start_master(base / "master", db, new_session=True,
                                            serve_args=("--workers", str(workers)))
            try:
                client = Client(url, admin)
                if nodes is None:
                    print(f"enrolling {args.nodes} simulated nodes ...", flush=True)
                    nodes = enroll_nodes(client, url, args.nodes)
                    client.add_software("http://example.test/sim.cfg", "sim")
                rows += measure_workers(args, url, proc.pid, client, nodes, workers)
            finally:
                stop_group(proc)
    finally:
        with admin_engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()
    return rows


def measure_workers(args, url, pid, client, nodes, workers):
    host, port = url.split("//")[1].split(":")
    credentials = [n[0] for n in nodes]
    revisions = [Client(url, c, retries=0).desired_state()["revision"] for c in credentials[:1]]
    polls = statistics.median(wrk(f"{url}/api/v1/node/desired-state?after={revisions[0]}",
                                  credentials[0], args.seconds, 32, 2)[0]
                              for _ in range(args.runs))
    fleet = Fleet(host, int(port), credentials)
    loop = asyncio.new_event_loop()
    current = {i: n[1] for i, n in enumerate(nodes)}
    latencies = []
    try:
        loop.run_until_complete(fleet.park_all(current))
        # steady state: every node's first poll answered (their credentials looked up once)
        # and the first heartbeat of all of them written (master/liveness.py, every 15 s)
        loop.run_until_complete(asyncio.sleep(args.settle))
        rss, pss = process_tree_memory(pid)
        picks = secrets.SystemRandom().sample(range(len(nodes)), min(args.samples, len(nodes)))
        began, when = time.monotonic(), []
        for i in picks:
            client.supply("http://example.test/sim.cfg", nodes[i][2])      # committed here
            committed = time.monotonic()
            answer = loop.run_until_complete(asyncio.wait_for(_response(fleet.conns[i][0]), 30))
            latencies.append((time.monotonic() - committed) * 1000)
            when.append((latencies[-1], committed - began))
            assert answer["changed"] and answer["revision"] > current[i], answer
            current[i] = answer["revision"]
            loop.run_until_complete(fleet.park(i, current[i]))
    finally:
        fleet.close()
        loop.run_until_complete(asyncio.sleep(0.2))
        loop.close()
    for latency, at in sorted(when, reverse=True)[:args.show_slowest]:
        print(f"  {workers} worker(s): {latency:.0f} ms at {at:.2f} s into the samples")
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return [
        {"what": f"{len(nodes):,} nodes parked: master RSS, {workers} worker(s)",
         "value": f"{rss:.0f} MB", "target": "< 300 MB", "ok": "yes" if rss < 300 else "NO"},
        {"what": "  (the same in PSS: pages the workers share counted once)",
         "value": f"{pss:.0f} MB", "target": "-", "ok": "-"},
        {"what": f"unchanged polls/s, {workers} worker(s)", "value": f"{polls:,.0f}",
         "target": ">= 1,000", "ok": "yes" if polls >= 1000 else "NO", "polls": polls},
        {"what": f"change -> node woken p50 / p99, {workers} worker(s)",
         "value": f"{p50:.1f} / {p99:.1f} ms", "target": "p99 < 100 ms",
         "ok": "yes" if p99 < 100 else "NO"},
    ]


# -- real nodes -----------------------------------------------------------------------------

class RealNode:
    def __init__(self, url, admin, base, prefix, partitions, ipv4_range, name):
        base.mkdir()
        os.chmod(base, 0o755)
        self.prefix, self.agent = prefix, None
        self.config, path = make_node(url, admin, base, prefix, partitions,
                                      "lxc" if shutil.which("lxc-execute") else "user",
                                      ipv4_range, name=name)
        self.path, self.base = path, base

    def start(self):
        self.log = open(self.base / "agent.log", "w")
        self.agent = subprocess.Popen(SLAPNODE + ["node", "run", "--config", str(self.path)],
                                      stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def stop_agent(self):
        if self.agent is not None:
            stop_group(self.agent)
            self.agent = None

    def stop(self):
        self.stop_agent()
        remove_node(self.config, self.prefix)

    def keep_warm(self, count, seconds=300):
        """Restart the agent keeping ``count`` free partitions warm; wait until they are."""
        from slapnode import nodeconfig

        self.stop_agent()
        self.config.warm_partitions = count
        nodeconfig.save(self.config, self.path)
        self.start()
        deadline = time.monotonic() + seconds
        while sum((part.root / deployer.SOCKET).exists()
                  for part in parts_of(self.config).values()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} partitions not warm after {seconds} s")
            time.sleep(0.2)


def until_ready(client, titles, seconds, started=None):
    """(time to the first ready, to the last) of ``titles``, since ``started`` (now by
    default). One long-poll per instance (``show --wait``: answered when it settles), so
    that watching costs the master an answer per change, not a listing every few ms that
    would take CPU from what is measured."""
    started = started or time.monotonic()

    def one(title):
        while time.monotonic() - started < seconds:
            left = seconds - (time.monotonic() - started)
            view = client.show_instance(title, wait=max(1, min(30, left)))
            if view["status"] == "ready":
                return time.monotonic() - started
            if view["status"] == "error":
                raise RuntimeError(f"{title}: {view.get('reason')}")
        raise RuntimeError(f"{title} not ready after {seconds} s")
    with concurrent.futures.ThreadPoolExecutor(len(titles)) as pool:
        times = list(pool.map(one, titles))
    return min(times), max(times)


def request_all(client, software, titles, node=None):
    """Request every title at once (16 at a time); seconds it took."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda t: client.request_instance(
            title=t, software=software, parameters={"name": t}, node=node or {}), titles))
    return time.monotonic() - started


def destroy_all(client, titles):
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda t: client.change_instance(t, "destroyed"), titles))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(
            v["status"] != "destroyed" for v in client.list_instances() if v["title"] in set(titles)):
        time.sleep(0.2)


def real_nodes(args, base):
    tag = secrets.token_hex(2)
    proc, url, admin_token = start_master(base / "real-master")
    nodes, rows = [], []
    try:
        admin = Client(url, admin_token)
        hello = f"{url}/software-releases/hello/software.cfg"
        admin.add_software(hello, "hello")
        user = Client(url, admin.add_user("bench")["token"])
        for i, (count, name) in enumerate(((max(args.burst, args.per_node), "one"),
                                           (args.per_node, "two"), (args.per_node, "three"))):
            nodes.append(RealNode(url, admin, base / f"node{i}", f"snsc{tag}{i}", count,
                                  f"10.246.{i * 4}.0/22", name))
            admin.supply(hello, name)
            timed(SLAPNODE + ["node", "software", "--config", str(nodes[-1].path)])
        nodes[0].start()
        time.sleep(2)
        for round_, warm in enumerate((2, args.burst)):
            if round_:          # every free partition warm beforehand (deploy/warm.py)
                nodes[0].keep_warm(warm)
                time.sleep(2)
            titles = [f"burst{round_}-{i}" for i in range(args.burst)]
            started = time.monotonic()          # from the first request: asking is part of it
            asked = request_all(user, hello, titles, {"computer": "one"})
            first, last = until_ready(user, titles, 300, started)
            rows.append({"what": f"burst, {warm} partitions warm: {args.burst} requested at "
                                 f"once ({asked:.1f} s to ask), first ready",
                         "value": f"{first:.2f} s", "target": "-", "ok": "-"})
            rows.append({"what": f"burst, {warm} partitions warm: all {args.burst} ready",
                         "value": f"{last:.2f} s", "target": "< 10 s",
                         "ok": "yes" if last < 10 else "NO", "seconds": last})
            destroy_all(user, titles)
        nodes[0].keep_warm(2)
        for node in nodes[1:]:
            node.start()
        time.sleep(2)
        titles = [f"spread{i}" for i in range(3 * args.per_node)]
        started = time.monotonic()
        asked = request_all(user, hello, titles)
        placed = len(titles) / asked
        _, last = until_ready(user, titles, 600, started)
        spread = {}
        for view in user.list_instances():
            if view["title"] in set(titles):
                spread[view["node"]] = spread.get(view["node"], 0) + 1
        rows.append({"what": f"three nodes: {len(titles)} requests placed/s", "value": f"{placed:.0f}",
                     "target": "-", "ok": "-"})
        rows.append({"what": f"three nodes: all {len(titles)} ready "
                             f"({', '.join(f'{k} {v}' for k, v in sorted(spread.items()))})",
                     "value": f"{last:.1f} s", "target": "-", "ok": "-"})
        destroy_all(user, titles)
    finally:
        for node in nodes:
            node.stop()
        stop_process(proc)
    return rows


def slapos_burst(count, limit=1500):
    """The same burst with slapos.core, as the anchor runs it (``bench/slapos_burst.sh.in``
    in place of the anchor's steps from its format on): ``count`` partitions formatted,
    ``count`` ``slapos request`` at once, then ``slapos node instance`` passes until every
    instance answers HTTP 200. Rows, and the seconds to all ready (None if not measured)."""
    tail = (Path(__file__).parent / "slapos_burst.sh.in").read_text()
    tail = tail.replace("@N@", str(count)).replace("@LIMIT@", str(limit))
    with slapos_anchor(tail, partitions=count) as anchor:
        if anchor is None:
            return [{"what": "burst, slapos.core", "value": "not run", "target": "-",
                     "ok": "the anchor or a Python 3.12 is missing"}], None
        work, script = anchor
        print(f"slapos.core: formatting {count} partitions (it sleeps 2 s after each address: "
              f"about {count * 4 // 60 + 1} min), then the burst ...", flush=True)
        out = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=work,
                             timeout=limit + count * 4 + 600).stdout
    found = re.search(r"burst n=\d+ asked=([\d.]+) first=([\d.]+) all=([\d.]+) ready=(\d+) "
                      r"passes=(\d+) failed-requests=(\d+)", out)
    if not found:
        return [{"what": "burst, slapos.core", "value": "failed", "target": "-",
                 "ok": (out.strip().splitlines() or ["no output"])[-1][:60]}], None
    asked, first, last = (float(x) for x in found.groups()[:3])
    ready, passes, failed = (int(x) for x in found.groups()[3:])
    done = ready == count
    return [
        {"what": f"burst, slapos.core: {count} requested at once ({asked:.1f} s to ask, "
                 f"{failed} refused), first ready", "value": f"{first:.2f} s", "target": "-", "ok": "-"},
        {"what": f"burst, slapos.core: all {count} ready ({passes} `node instance` passes)",
         "value": f"{last:.2f} s" if done else f"{ready} of {count} in {last:.0f} s",
         "target": "-", "ok": "-"},
    ], (last if done else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="a PostgreSQL URL whose server lets the bench create a "
                                     "database (needed for the simulated nodes)")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--per-node", type=int, default=50)
    parser.add_argument("--skip-nodes", action="store_true", help="no real nodes (no root needed)")
    parser.add_argument("--skip-simulated", action="store_true")
    parser.add_argument("--settle", type=float, default=17.0,
                        help="seconds between parking the nodes and measuring (warm-up)")
    parser.add_argument("--worker-counts", type=lambda t: [int(x) for x in t.split(",")],
                        default=[1, 2], help="e.g. 1,2 (the default) or 1")
    parser.add_argument("--slapos", action="store_true",
                        help="also the same burst with slapos.core, as the anchor runs it, and "
                             "the ratio (its format alone takes ~4 s a partition)")
    parser.add_argument("--show-slowest", type=int, default=0,
                        help="print the slowest wake-ups with when they happened")
    args = parser.parse_args()
    if not args.skip_simulated and args.db and not shutil.which("wrk"):
        sys.exit("the simulated nodes' polls/s need wrk: apt-get install wrk "
                 "(or --skip-simulated)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    base = Path(tempfile.mkdtemp(prefix="slapnode-bench-scale-"))
    os.chmod(base, 0o755)
    rows = []
    try:
        if not args.skip_simulated:
            if not args.db:
                rows.append({"what": "simulated nodes", "value": "not measured",
                             "target": "-", "ok": "give --db (PostgreSQL)"})
            else:
                measured = simulated(args, base)
                one = [r["polls"] for r in measured if "polls" in r]
                rows += measured
                if len(one) == 2:
                    rows.append({"what": "polls/s, 2 workers / 1 worker", "value": f"{one[1] / one[0]:.2f}",
                                 "target": "> 1", "ok": "yes" if one[1] > one[0] else "NO"})
        if not args.skip_nodes:
            if os.geteuid() != 0:
                rows.append({"what": "real nodes", "value": "not measured", "target": "-",
                             "ok": "needs root"})
            else:
                slapos_rows, slapos_all = slapos_burst(args.burst) if args.slapos else ([], None)
                ours = real_nodes(args, base)
                rows += ours + slapos_rows
                mine = next((r["seconds"] for r in ours if "seconds" in r), None)
                if slapos_all and mine:
                    rows.append({"what": "burst, all ready: slapos.core / slapnode (2 warm)",
                                 "value": f"{slapos_all / mine:.1f}x", "target": "> 1",
                                 "ok": "yes" if slapos_all > mine else "NO"})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nscale, medians of {args.runs} runs where repeated")
    print_rows(rows, [("WHAT", "what"), ("VALUE", "value"), ("TARGET", "target"), ("OK", "ok")])


if __name__ == "__main__":
    main()

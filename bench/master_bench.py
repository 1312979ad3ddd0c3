"""Master benchmark: desired-state polls, instance requests, idle long-polls.

Starts a fresh master (SQLite by default, or ``--db URL``), enrolls a computer
with many partitions through the real node API, then measures with wrk (a C
load generator, so the client is not the bottleneck on this 2-core machine):

* unchanged desired-state polls per second (``after=<current revision>``);
* instance requests per second (each a new title: allocation, supply, revision);
* RSS of the master holding N idle long-polls (``wait=120``), and the latency
  of a health check while they are held.

* usage samples ingested per second (reports of 100 partitions, 1,000 partitions);
* ``invoice show`` for a user with 1,000 instances and a year of hourly usage each
  (an issued invoice, and the current month's draft), and a year of one instance's usage.

Targets (issues 2 and 14): >= 1,000 polls/s, >= 200 requests/s, 5,000 idle long-polls
under 300 MB RSS, invoice show < 200 ms. Prints a table; medians of ``--runs`` runs.

    .venv/bin/python bench/master_bench.py [--runs 3] [--db URL] [--long-polls 5000]
"""

import argparse
import asyncio
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_master, stop_process  # noqa: E402  (same start-up as the tests)

from slapnode.client import Client  # noqa: E402

from common import Gone, rss_mb  # noqa: E402

REQUEST_LUA = r"""
local counter = 0
local prefix = "x"
init = function(args)
  prefix = args[1]          -- a new prefix per run: every request is a new title
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"title": "bench-%s-%d", "software": "bench", "parameters": {"name": "n%d"}}',
    prefix, counter, counter)
  return wrk.format("POST", "/api/v1/instances", nil, body)
end
"""


def wrk(url, token, seconds, connections, threads, script=None, script_args=()):
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
           "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json"]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def parse_wrk(out):
    """(requests/s, errors, latency) from wrk's output. Errors count the answers that
    were not 2xx/3xx and every socket error (connect, read, write, timeout): a rate
    made of failures is not a rate."""
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    latency = re.search(r"Latency\s+(\S+)", out).group(1)
    return rate, errors, latency


async def hold_long_polls(host, port, path, token, count, settle):
    """Open ``count`` connections, each parked on a long-poll; return when all are sent."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
    writers = []
    sem = asyncio.Semaphore(200)

    async def one():
        async with sem:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            await writer.drain()
            writers.append((reader, writer))

    await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.sleep(settle)
    return writers


def measure_long_polls(master_url, pid, credential, after, count):
    host, port = master_url.split("//")[1].split(":")
    loop = asyncio.new_event_loop()
    before = rss_mb(pid)            # Gone if the master died: nothing is reported as measured
    started = time.monotonic()
    writers = loop.run_until_complete(hold_long_polls(
        host, int(port), f"/api/v1/node/desired-state?after={after}&wait=120", credential,
        count, settle=2.0))
    opened = time.monotonic() - started
    held = rss_mb(pid)
    t0 = time.monotonic()
    requests.get(master_url + "/api/v1/health", timeout=30)
    health_ms = (time.monotonic() - t0) * 1000
    # still parked? none of them should have an answer yet (an early answer, or a
    # connection the master refused, means the RSS figure is not of N parked polls)
    answered = sum(1 for reader, _ in writers if reader.at_eof() or len(reader._buffer))
    answered += count - len(writers)
    for _, writer in writers:
        writer.close()
    loop.run_until_complete(asyncio.sleep(0.5))
    loop.close()
    return before, held, opened, health_ms, answered


def measure_usage(node, seconds, runs, partitions=1000, per_report=100, threads=4):
    """Usage samples the master ingests per second: reports of ``per_report`` placed
    partitions each (a node's pass), ``threads`` at a time, over ``partitions`` instances.
    Returns (median rate, whether the samples are in the history)."""
    import concurrent.futures

    placed = [(p["reference"], p["instance"]["id"]) for p in node.desired_state()["partitions"]
              if p["instance"]][:partitions]
    batches = [placed[i:i + per_report] for i in range(0, len(placed), per_report)]
    rates = []
    for run in range(runs):
        done, deadline, started = 0, time.monotonic() + seconds, time.monotonic()

        def send(batch, tick):
            node.report(instances=[{"partition": ref, "instance_id": iid, "status": "ready",
                                    "usage": {"cpu_seconds": tick * 10.0, "memory_mb": 50.0,
                                              "disk_mb": 3.0, "net_in_bytes": tick * 1000,
                                              "net_out_bytes": tick * 100}}
                                   for ref, iid in batch])
            return len(batch)
        tick = 0
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            while time.monotonic() < deadline:
                tick += 1
                done += sum(pool.map(lambda b: send(b, tick + run * 1000), batches))
        rates.append(done / (time.monotonic() - started))
    return statistics.median(rates), bool(placed)


def seed_billing(url, db_url, admin, instances, hours):
    """A user with ``instances`` instances of a priced release, alive for a year, with
    ``hours`` hours of hourly usage each (and the monthly rows invoices read); the last
    month closed. Returns (user token, an issued invoice number, one instance title)."""
    import datetime as dt

    from sqlalchemy import create_engine, insert, select, update

    from slapnode.master.models import InstancePeriod, Instance, UsageHourly, UsageMonthly, User

    client = Client(url, admin)
    client.add_software("http://bench.example/billed.cfg", "billed", "4.99", "billed", None, "0.01",
                        "0.05")
    token = client.add_user("billing")["token"]
    user = Client(url, token)
    for i in range(instances):
        user.request_instance(title=f"worker-{i}", software="billed")
    engine = create_engine(db_url)
    now = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = now - dt.timedelta(hours=hours)
    try:
        with engine.begin() as conn:
            owner = conn.scalar(select(User.id).where(User.name == "billing"))
            ids = list(conn.scalars(select(Instance.id).where(Instance.owner_id == owner)))
            conn.execute(update(InstancePeriod).where(InstancePeriod.instance_id.in_(ids))
                         .values(started_at=min(start, now - dt.timedelta(days=62))))
            months = sorted({(start + dt.timedelta(hours=h)).strftime("%Y-%m")
                             for h in range(0, hours + 1, 24)} | {now.strftime("%Y-%m")})
            conn.execute(insert(UsageMonthly), [
                {"instance_id": i, "computer_id": None, "month": m, "cpu_seconds": 3600.0 * 24 * 30,
                 "memory_mb_seconds": 0.0, "disk_mb_seconds": 2048.0 * 86400 * 30}
                for i in ids for m in months])
        seed_hourly(engine, ids, start, hours)
    finally:
        engine.dispose()
    last = (now.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    issued = client.close_invoices(last)["issued"]
    return token, issued[0], "worker-0"


def seed_hourly(engine, ids, start, hours):
    """A year of hourly rows per instance, fast: the driver's executemany on SQLite (the
    ORM would take a quarter of an hour), batched Core inserts elsewhere."""
    import datetime as dt

    from sqlalchemy import insert

    from slapnode.master.models import UsageHourly

    stamps = [start + dt.timedelta(hours=h) for h in range(hours)]
    if engine.dialect.name == "sqlite":
        texts = [s.strftime("%Y-%m-%d %H:%M:%S.%f") for s in stamps]
        raw = engine.raw_connection()
        try:
            for i in ids:
                raw.executemany(
                    "INSERT INTO usage_hourly (instance_id, hour, computer_id, samples, cpu_seconds, "
                    "memory_mb_sum, memory_mb_peak, disk_mb_sum, disk_mb_peak, net_in_bytes, "
                    "net_out_bytes) VALUES (?, ?, NULL, 60, 3600.0, 3000.0, 60.0, 120000.0, 2048.0, "
                    "1000, 100)", [(i, t) for t in texts])
            raw.commit()
        finally:
            raw.close()
        return
    for i in ids:
        with engine.begin() as conn:
            conn.execute(insert(UsageHourly), [
                {"instance_id": i, "hour": s, "computer_id": None, "samples": 60,
                 "cpu_seconds": 3600.0, "memory_mb_sum": 3000.0, "memory_mb_peak": 60.0,
                 "disk_mb_sum": 120000.0, "disk_mb_peak": 2048.0, "net_in_bytes": 1000,
                 "net_out_bytes": 100} for s in stamps])


def timed_calls(fn, runs):
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--db", help="SQLAlchemy URL of an EMPTY database (default: SQLite)")
    parser.add_argument("--long-polls", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=10000)
    parser.add_argument("--billed-instances", type=int, default=1000)
    parser.add_argument("--usage-hours", type=int, default=8760, help="hourly usage per instance")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    data_dir = Path(tempfile.mkdtemp(prefix="slapnode-bench-master-"))
    proc = None
    try:
        proc, url, admin = start_master(data_dir, args.db)
        print(f"master pid {proc.pid} at {url} ({'SQLite' if not args.db else 'PostgreSQL'}), "
              f"{os.cpu_count()} CPUs; medians of {args.runs} runs of {args.seconds} s", flush=True)
        client = Client(url, admin)
        client.add_software("http://bench.example/bench.cfg", "bench")
        token = client.add_user("bench")["token"]
        enroll = client.create_enrollment_token("bench-node", scope="public")["token"]
        credential = Client(url).enroll(enroll)["credential"]
        node = Client(url, credential)
        node.report_partitions([{"reference": f"slappart{i}"} for i in range(args.partitions)])
        revision = node.desired_state()["revision"]

        rows = []
        print("measuring polls...", flush=True)
        poll_url = f"{url}/api/v1/node/desired-state?after={revision}"
        polls = [wrk(poll_url, credential, args.seconds, 32, 1) for _ in range(args.runs)]
        rate = statistics.median(p[0] for p in polls)
        errors = sum(p[1] for p in polls)
        rows.append(("unchanged desired-state polls/s", f"{rate:,.0f}", ">= 1,000",
                     rate >= 1000 and errors == 0, f"errors {errors}, latency {polls[-1][2]}"))

        print("measuring requests...", flush=True)
        script = data_dir / "request.lua"
        script.write_text(REQUEST_LUA)
        reqs = [wrk(url + "/api/v1/instances", token, args.seconds, 8, 1, str(script), [f"run{i}"])
                for i in range(args.runs)]
        rate = statistics.median(r[0] for r in reqs)
        errors = sum(r[1] for r in reqs)
        listed = Client(url, token).list_instances()
        placed = sum(1 for i in listed if i["partition"])
        rows.append(("instance requests/s (new titles)", f"{rate:,.0f}", ">= 200",
                     rate >= 200 and errors == 0 and placed == len(listed),
                     f"errors {errors}, latency {reqs[-1][2]}, {placed} of {len(listed)} placed"))

        print("measuring usage reports...", flush=True)
        rate, stored = measure_usage(node, args.seconds, args.runs)
        rows.append(("usage samples ingested/s (1,000 partitions)", f"{rate:,.0f}", ">= 1,000",
                     rate >= 1000 and stored,
                     "reports of 100 partitions each, 4 at a time; 1,000 partitions reporting "
                     "every 60 s need 17/s"))

        print(f"seeding {args.billed_instances:,} instances with {args.usage_hours:,} hours of "
              "usage each...", flush=True)
        db_url = args.db or f"sqlite:///{data_dir}/master.db"
        seeded = time.monotonic()
        billing, number, title = seed_billing(url, db_url, admin, args.billed_instances,
                                              args.usage_hours)
        print(f"  seeded in {time.monotonic() - seeded:.0f} s", flush=True)
        payer = Client(url, billing)
        lines = len(payer.show_invoice(number)["lines"])
        shown = timed_calls(lambda: payer.show_invoice(number), 10)
        draft = timed_calls(lambda: payer.show_invoice("draft"), 10)
        year = timed_calls(lambda: payer.instance_usage(title, since="2000-01-01T00:00:00+00:00"), 10)
        points = len(payer.instance_usage(title, since="2000-01-01T00:00:00+00:00"))
        rows.append(("invoice show, issued (ms)", f"{shown:.0f}", "< 200", shown < 200,
                     f"{lines:,} lines, {args.billed_instances:,} instances"))
        rows.append(("invoice show, current draft (ms)", f"{draft:.0f}", "< 200", draft < 200,
                     "computed from periods and monthly usage"))
        rows.append(("a year of one instance's hourly usage (ms)", f"{year:.0f}", "-", points > 0,
                     f"{points:,} points"))

        print("measuring long-polls...", flush=True)
        time.sleep(1)       # let the requests wrk left in flight commit
        revision = node.desired_state()["revision"]
        results = [measure_long_polls(url, proc.pid, credential, revision, args.long_polls)
                   for _ in range(args.runs)]
        held = statistics.median(r[1] for r in results)
        early = sum(r[4] for r in results)
        rows.append((f"RSS with {args.long_polls:,} idle long-polls (MB)", f"{held:.0f}", "< 300",
                     held < 300 and early == 0,
                     f"idle {results[0][0]:.0f} MB before the first run, opened in "
                                 f"{statistics.median(r[2] for r in results):.1f} s, health check "
                                 f"{statistics.median(r[3] for r in results):.0f} ms while held, "
                                 f"answered early or refused: {early}"))

        width = max(len(r[0]) for r in rows)
        print(f"\n{'measure'.ljust(width)}  {'median':>10}  {'target':>9}  ok   notes")
        for name, value, target, ok, notes in rows:
            print(f"{name.ljust(width)}  {value:>10}  {target:>9}  {'yes' if ok else 'NO ':3}  {notes}")
    except Gone as exc:
        sys.exit(f"not measured: {exc} (see the master's log above)")
    except Exception:
        if proc is not None and (data_dir / "serve.log").exists():
            print("master log tail:\n" + (data_dir / "serve.log").read_text()[-2000:], file=sys.stderr)
        raise
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

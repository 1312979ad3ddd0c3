"""My Space benchmark: how long the master takes to answer each page for a user
with 1,000 instances.

Starts a fresh master (SQLite by default, or ``--db URL``), enrolls a computer with
as many partitions as instances, seeds a user with 1,000 placed instances of a
priced release, a month of hourly usage each and an issued invoice (the same
seeding as master_bench.py), signs in through /login, then times each page over
loopback: median and 90th percentile of ``--calls`` GETs per page, per run; the
table shows the median over ``--runs`` runs. The time includes HTTP on loopback,
so the server-side part is smaller still.

Target (issue 15): every page under 100 ms with 1,000 instances.

    .venv/bin/python bench/web_bench.py [--runs 3] [--calls 20] [--instances 1000] [--db URL]
"""

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_master, stop_process  # noqa: E402

from slapnode.client import Client  # noqa: E402

from common import print_rows  # noqa: E402
from master_bench import seed_billing  # noqa: E402

TARGET_MS = 100


def sign_in(url, token):
    browser = requests.Session()
    browser.trust_env = False
    page = browser.get(url + "/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    answer = browser.post(url + "/login", data={"csrf": csrf, "method": "token", "token": token},
                          timeout=10)
    answer.raise_for_status()
    return browser


def time_page(browser, url, calls):
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        answer = browser.get(url, timeout=30)
        took.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {answer.status_code}")
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.9) - 1], len(answer.content)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--usage-hours", type=int, default=24 * 31)
    parser.add_argument("--db", help="SQLAlchemy URL of an EMPTY database (default: SQLite)")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="slapnode-bench-web-"))
    proc = None
    try:
        proc, url, admin = start_master(data_dir, args.db)
        client = Client(url, admin)
        enroll = client.create_enrollment_token("bench-node", scope="public")["token"]
        node = Client(url, Client(url).enroll(enroll)["credential"])
        node.report_partitions([{"reference": f"slappart{i}"} for i in range(args.instances)])
        print(f"seeding {args.instances:,} instances with {args.usage_hours:,} hours of usage "
              "each...", flush=True)
        seeded = time.monotonic()
        token, number, title = seed_billing(url, args.db or f"sqlite:///{data_dir}/master.db",
                                            admin, args.instances, args.usage_hours)
        print(f"  seeded in {time.monotonic() - seeded:.0f} s", flush=True)
        browser = sign_in(url, token)
        pages = [("/services", "My Services"), (f"/services/{title}?range=month", "an instance, a month"),
                 ("/software", "Software"), ("/software/billed", "a release's request form"),
                 ("/servers", "My Servers"), ("/invoices", "My Invoices"),
                 (f"/invoices/{number}", "an issued invoice"), ("/invoices/draft", "this month's draft"),
                 ("/account", "My Account")]
        admin_browser = sign_in(url, admin)
        admin_pages = [("/admin/users", "admin: users"), ("/admin/computers", "admin: computers")]
        results = {}
        for _run in range(args.runs):
            for who, listed in ((browser, pages), (admin_browser, admin_pages)):
                for path, _label in listed:
                    results.setdefault(path, []).append(time_page(who, url + path, args.calls))
        rows = []
        for path, label in pages + admin_pages:
            runs = results[path]
            median = statistics.median(r[0] for r in runs)
            p90 = statistics.median(r[1] for r in runs)
            rows.append({"page": label, "path": path.split("?")[0], "median": f"{median:.1f}",
                         "p90": f"{p90:.1f}", "kb": f"{runs[-1][2] / 1024:.0f}",
                         "ok": "yes" if median < TARGET_MS else "NO"})
        print(f"\nMy Space pages, {args.instances:,} instances ({'SQLite' if not args.db else 'PostgreSQL'}); "
              f"ms over loopback, medians of {args.runs} runs of {args.calls} calls; target < {TARGET_MS} ms")
        print_rows(rows, [("PAGE", "page"), ("PATH", "path"), ("MEDIAN MS", "median"),
                          ("P90 MS", "p90"), ("KB", "kb"), ("< 100 MS", "ok")])
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Volunteer policy benchmark (root): how fast the node gives the machine back to its
owner, and how well the CPU limit holds.

With real cgroups and real processes, as the node's policy thread does it
(``slapnode/volunteer.py``: a tick every 0.5 s):

* owner activity -> partitions frozen: a CPU burner starts outside the partitions
  (``run_when = idle``); the time until the partitions' cgroup is frozen;
* calm -> thawed: the burner stops; the time until they thaw, minus the calm period;
* the CPU share of the whole machine the partitions use (burners in every partition,
  enough to fill every CPU) under ``cpu_limit_pct`` = 25, 50 and 100.

Targets (issue 16): frozen within 1 s of the owner's activity, thawed within 2 s after the
calm period; the CPU share within a few points of the limit. Medians of ``--runs`` runs.

    .venv/bin/python bench/policy_bench.py [--runs 5] [--calm 3]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_policy_system import BURN, Machine  # noqa: E402  (the tests' own set-up)

from slapnode import policy as policy_mod  # noqa: E402
from slapnode import volunteer  # noqa: E402

from common import print_rows  # noqa: E402


def until(predicate, limit):
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > limit:
            return None
        time.sleep(0.01)
    return time.monotonic() - started


def freeze_and_thaw(base, calm, runs):
    frozen, thawed = [], []
    machine = Machine(base)
    try:
        machine.config.policy = policy_mod.Policy(run_when="idle", idle_cpu_pct=30,
                                                  idle_minutes=calm / 60)
        machine.start(BURN, partition="part0")
        watch = volunteer.PolicyWatch(machine.config, machine.path)
        watch.start()
        try:
            time.sleep(1.0)
            for _ in range(runs):
                owner = machine.start(BURN)
                frozen.append(until(machine.parent.frozen, 10))
                owner.kill()
                owner.wait()
                took = until(lambda: not machine.parent.frozen(), calm + 10)
                thawed.append(None if took is None else took - calm)
                time.sleep(1.0)
        finally:
            watch.stop()
    finally:
        machine.cleanup()
    return frozen, thawed


def cpu_share(base, limit, runs):
    machine = Machine(base)
    try:
        for index in range(os.cpu_count() or 1):
            machine.start(BURN, partition=f"part{index}")
        machine.parent.set_limits(limit, 0)
        return [machine.cpu_share(3.0) for _ in range(runs)]
    finally:
        machine.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calm", type=float, default=3.0, help="calm period, seconds")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("policy_bench needs root (cgroups)")
    rows = []
    with tempfile.TemporaryDirectory() as base:
        frozen, thawed = freeze_and_thaw(Path(base) / "idle", args.calm, args.runs)
        ok = all(f is not None for f in frozen) and all(t is not None for t in thawed)
        median = statistics.median(f for f in frozen if f is not None) if any(frozen) else None
        rows.append({"what": "owner activity -> partitions frozen (s)", "figure":
                     f"{median:.2f}" if median is not None else "never", "target": "< 1",
                     "ok": "yes" if ok and median < 1 else "NO",
                     "note": f"runs {', '.join(f'{f:.2f}' if f is not None else 'never' for f in frozen)}"})
        median = statistics.median(t for t in thawed if t is not None) if any(thawed) else None
        rows.append({"what": f"calm ({args.calm:g} s) -> thawed, after the calm (s)",
                     "figure": f"{median:.2f}" if median is not None else "never", "target": "< 2",
                     "ok": "yes" if ok and median < 2 else "NO",
                     "note": f"runs {', '.join(f'{t:.2f}' if t is not None else 'never' for t in thawed)}"})
        for limit in (25, 50, 100):
            shares = cpu_share(Path(base) / f"cpu{limit}", limit, args.runs)
            share = statistics.median(shares)
            rows.append({"what": f"CPU share of the machine, cpu_limit_pct = {limit}",
                         "figure": f"{share:.1f}", "target": f"{limit} (±5)",
                         "ok": "yes" if abs(share - limit) <= 5 else "NO",
                         "note": f"{os.cpu_count()} CPUs, a burner per CPU in the partitions"})
    print(f"\nvolunteer policy, medians of {args.runs} runs")
    print_rows(rows, [("WHAT", "what"), ("FIGURE", "figure"), ("TARGET", "target"), ("OK", "ok"),
                      ("NOTE", "note")])


if __name__ == "__main__":
    main()

"""Instance benchmark: request -> ready, destroy -> free, a killed service,
a no-op pass over 50 deployed partitions, and memory. As root.

A fresh master and one node (LXC isolation where LXC is installed) with the
hello release already built; the node daemon (`slapnode node run`) runs as it
would in production. Timings are whole CLI commands (`instance request
--wait`, `instance destroy --wait`), medians of ``--runs`` runs.

With ``--slapos`` the same run then renders and runs the anchor's re-runnable
SlapOS set-up (../shared/anchors/slapos/RUN.sh.in: slapos.core from PyPI, slapproxy,
`slapos node format`, the equivalent minimal release, request -> HTTP 200 with
`slapos node instance` run right after each request, a no-op pass, destroy), about
3 minutes, and prints what it measured beside ours with the ratio; a figure it did
not measure says so. It uses the names slapuser*/slapsoft and the bridge slapbr0,
and removes them at its end: do not use it on a node formatted with those names.
The anchor's notes (../shared/anchors/slapos/NOTES.md) are printed in a column of
their own, marked as quoted, never as measured.

Every row says whether its figure is what it names: the no-op pass is timed only
once all instances are ready and must do nothing but checks; memory of a process
that is gone is "not measured", never 0.

Before each request the node is let settle WARM_SETTLE s, so that its next free
partitions are warm (deploy/warm.py): "a warm node". The API row is the platform's
own path (client library: request, then long-poll until ready); the CLI row adds
the command's start.

Targets (issue 18): request -> ready on a warm node < 0.25 s. (Issue 5): request
-> ready < 1 s; destroy -> free < 1 s; killed
service back < 2 s; no-op pass with 50 partitions < 0.3 s; agent idle RSS
< 60 MB; per-partition overhead < 25 MB.

    .venv/bin/python bench/instance_bench.py [--runs 5] [--partitions 50] [--isolation lxc|user]
"""

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import start_master, stop_process  # noqa: E402

from common import (SLAPNODE, Gone, make_node, print_rows, pss_mb, remove_node,  # noqa: E402
                    rss_mb, slapos_anchor, timed)

from slapnode.agent import InstancePass  # noqa: E402
from slapnode.client import Client  # noqa: E402
from slapnode.deploy import deployer  # noqa: E402
from slapnode.deploy import isolation as isolation_mod  # noqa: E402
from slapnode.deploy.partition import parts_of  # noqa: E402
from slapnode.proc import stat_fields  # noqa: E402
WARM_SETTLE = 1.5               # seconds the node gets to warm its next free partitions


STARTSECS = 1.0                 # a service's startsecs (slapnode/recipes/instance.py)


def age(pid):
    """Seconds since process ``pid`` started."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")


def _parent(pid):
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


QUOTED = {     # ../shared/anchors/slapos/NOTES.md, measured on this kind of machine
    "request -> ready, warm node (CLI --wait)": "1.66 s median, request -> HTTP 200 with `node instance` by hand",
    "destroy -> partition free (CLI --wait)": "4.4-6.5 s (node instance + report)",
    "killed service back": "never: the anchor's supervisord has autorestart off",
    "no-op pass": "0.36 s for 1 partition",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=50)
    parser.add_argument("--slapos", action="store_true",
                        help="also run the anchor's slapos.core scenario (~3 min) side by side")
    parser.add_argument("--isolation", choices=["lxc", "user"],
                        default="lxc" if shutil.which("lxc-execute") else "user")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    base = Path(tempfile.mkdtemp(prefix="snbench-inst-"))
    os.chmod(base, 0o755)
    tag = secrets.token_hex(2)
    proc = agent = config = None
    rows = []

    def row(name, value, target, unit, ok=True, why=""):
        """One figure; ``ok`` False (with ``why``) when it is not what it names."""
        rows.append({"measure": name, "value": value, "target": target, "unit": unit,
                     "ok": ok and (target is None or value < target), "why": why})

    try:
        proc, url, admin = start_master(base / "master")
        a = Client(url, admin)
        hello = f"{url}/software-releases/hello/software.cfg"
        a.add_software(hello, "hello")
        user_token = a.add_user("bench")["token"]
        config, path = make_node(url, a, base, f"snib{tag}", args.partitions, args.isolation,
                                 "10.249.0.0/24")
        a.supply(hello, "bench")
        timed(SLAPNODE + ["node", "software", "--config", str(path)])
        log = open(base / "agent.log", "w")
        agent = subprocess.Popen(SLAPNODE + ["node", "run", "--config", str(path)], stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(2)
        env = {**os.environ, "SLAPNODE_MASTER": url, "SLAPNODE_TOKEN": user_token,
               "SLAPNODE_CLIENT_CONFIG": "/nonexistent"}
        print(f"node: {args.partitions} partitions, isolation {args.isolation}; "
              f"{args.runs} runs each", flush=True)

        ready, destroyed, back, api = [], [], [], []
        user = Client(url, user_token)
        for i in range(args.runs):
            # the node is let settle first: its next free partitions warm (deploy/warm.py)
            time.sleep(WARM_SETTLE)
            started = time.monotonic()
            user.request_instance(title=f"api{i}", software="hello", parameters={"name": f"a{i}"})
            while user.show_instance(f"api{i}", wait=30)["status"] != "ready":
                pass
            api.append(time.monotonic() - started)
            user.change_instance(f"api{i}", "destroyed")
            while user.show_instance(f"api{i}", wait=30)["status"] != "destroyed":
                pass
            time.sleep(WARM_SETTLE)
            title = f"lat{i}"
            ready.append(timed(SLAPNODE + ["instance", "request", title, "hello", "--parameter",
                                           f"name=n{i}", "--wait", "30"], env=env))
            view = Client(url, user_token).show_instance(title)
            target = view["connection"]["url"]
            assert requests.get(target, timeout=2).text == f"Hello, n{i}!"
            part = parts_of(config)[view["partition"]]
            server = [p for p in isolation_mod.processes_of(part.uid) if "serve.py" in cmdline(p)][0]
            # a running service (up for its startsecs, 1 s): killed sooner it is a start
            # that failed, which supervisord retries after a backoff (1 s more)
            time.sleep(max(0.0, STARTSECS + 0.1 - age(server)))
            os.kill(server, signal.SIGKILL)
            started = time.monotonic()
            while True:
                try:
                    if requests.get(target, timeout=0.5).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.02)
            back.append(time.monotonic() - started)
            destroyed.append(timed(SLAPNODE + ["instance", "destroy", title, "--wait", "30"], env=env))
        row("request -> ready, warm node (API: request, long-poll)", statistics.median(api),
            0.25, "s")
        row("request -> ready, warm node (CLI --wait)", statistics.median(ready), 1.0, "s")
        row("destroy -> partition free (CLI --wait)", statistics.median(destroyed), 1.0, "s")
        row("killed service back (running, up > startsecs)", statistics.median(back), 2.0, "s")

        print(f"deploying {args.partitions} instances ...", flush=True)
        c = Client(url, user_token)
        for i in range(args.partitions):
            c.request_instance(title=f"many{i}", software="hello", parameters={"name": str(i)})
        deadline = time.monotonic() + 300
        count = 0
        while time.monotonic() < deadline:
            statuses = [v["status"] for v in c.list_instances() if v["title"].startswith("many")]
            count = statuses.count("ready")
            if count == args.partitions:
                break
            time.sleep(1)
        noop_name = f"no-op pass, {args.partitions} partitions"
        if count != args.partitions:
            row(noop_name, float("nan"), 0.3, "s", ok=False,
                why=f"not measured: only {count} of {args.partitions} ready after 300 s")
        else:
            os.killpg(agent.pid, signal.SIGSTOP)        # the pass below runs alone
            node = Client(url, config.credential)
            doc = node.desired_state()
            noop, kinds = [], set()
            for _ in range(args.runs):
                started = time.monotonic()
                outcomes = InstancePass(config, node).run(doc, only_changed_reports=True)
                noop.append(time.monotonic() - started)
                kinds |= {(o.kind, o.status) for o in outcomes}
            cli = statistics.median(timed(SLAPNODE + ["node", "instance", "--config", str(path)],
                                          env=env) for _ in range(3))
            os.killpg(agent.pid, signal.SIGCONT)
            nothing_done = kinds == {("check", "ready")}
            row(noop_name, statistics.median(noop), 0.3, "s", ok=nothing_done,
                why="" if nothing_done else f"the pass did more than checks: {sorted(kinds)}")
            row("  (the same as `node instance`, a new process)", cli, None, "s")

        # steady state: each partition's warm deployer leaves IDLE s after its deployment
        # (deploy/deployer.py); until then it adds about 5 MB to its partition
        deadline = time.monotonic() + deployer.IDLE + 2 * deployer.TICK + 5
        while time.monotonic() < deadline and any(
                (part.root / deployer.SOCKET).exists() for part in parts_of(config).values()
                if (part.root / "etc" / "supervisor.d" / "httpd.conf").exists()):
            time.sleep(1)
        time.sleep(2)       # a deployer that just left is reaped by its supervisord's loop
        try:
            row("agent idle RSS", rss_mb(agent.pid), 60, "MB")
        except Gone as exc:
            row("agent idle RSS", float("nan"), 60, "MB", ok=False, why=str(exc))
        # its zygote (deploy/zygote.py) stays zygote.IDLE s after it last forked a supervisord
        zygotes = [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))
                   if "slapnode.deploy.zygote" in cmdline(p) and _parent(p) == agent.pid]
        try:
            row("  its zygote, while it stays (RSS, PSS)", sum(rss_mb(p) for p in zygotes), None,
                "MB", why=f"PSS {sum(pss_mb(p) for p in zygotes):.0f} MB" if zygotes
                else "gone (idle)")
        except Gone:
            pass
        overhead, overhead_rss, missing = [], [], 0
        for part in parts_of(config).values():
            # (not a deployer that left and is not reaped yet: a zombie has no command line)
            pids = [p for p in isolation_mod.processes_of(part.uid)
                    if cmdline(p) and "serve.py" not in cmdline(p)]
            pids += [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))
                     if cmdline(p).startswith("lxc-execute") and f" slapnode-{part.user} " in cmdline(p)]
            try:
                if not pids:
                    raise Gone(f"no supervisord in {part.reference}")
                overhead.append(sum(pss_mb(p) for p in pids))
                overhead_rss.append(sum(rss_mb(p) for p in pids))
            except Gone:
                missing += 1
        what = "supervisord" + (" + lxc-execute + init" if args.isolation == "lxc" else "")
        why = f"{missing} partitions had nothing to measure" if missing else ""
        row(f"per-partition overhead, PSS ({what})",
            statistics.median(overhead) if overhead else float("nan"), 25, "MB",
            ok=not missing, why=why)
        row("  (the same in RSS, shared pages counted in full)",
            statistics.median(overhead_rss) if overhead_rss else float("nan"), None, "MB",
            ok=not missing)
    finally:
        if agent is not None:
            os.killpg(agent.pid, signal.SIGCONT)
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(15)
        if config is not None:
            remove_node(config, f"snib{tag}")
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(base, ignore_errors=True)

    slapos = run_anchor(f"no-op pass, {args.partitions} partitions") if args.slapos else {}
    table = []
    for r in rows:
        name = r["measure"]
        value = "-" if r["value"] != r["value"] else \
            (f"{r['value']:.0f} {r['unit']}" if r["unit"] == "MB" else f"{r['value']:.2f} s")
        measured, ratio = "", ""
        if args.slapos:
            number, text = slapos.get(name, (None, "not measured by the anchor's run"))
            measured = text
            if number and r["value"] == r["value"] and r["value"]:
                ratio = f"{number / r['value']:.1f}x"
        quoted = next((q for k, q in QUOTED.items() if name.startswith(k)), "")
        table.append({"measure": name, "value": value,
                      "target": "" if r["target"] is None else f"< {r['target']} {r['unit']}",
                      "ok": ("yes" if r["ok"] else "NO") + (f" ({r['why']})" if r["why"] else ""),
                      "measured": measured, "ratio": ratio, "quoted": quoted})
    columns = [("measure", "measure"), ("slapnode", "value"), ("target", "target"), ("ok", "ok")]
    if args.slapos:
        columns += [("slapos.core, run now", "measured"), ("ratio", "ratio")]
    columns += [("slapos.core, quoted from the anchor's NOTES.md", "quoted")]
    print()
    print_rows(table, columns)


def run_anchor(noop_row):
    """Run the anchor's SlapOS scenario; {measure: (seconds or None, text)}."""
    import re

    with slapos_anchor() as anchor:
        if anchor is None:
            print("slapos.core: the anchor or a Python 3.12 is missing: not run")
            return {}
        work, script = anchor
        print("slapos.core: running the anchor's scenario (about 3 minutes) ...", flush=True)
        out = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                             cwd=work, timeout=1200).stdout
    if not out:
        return {}
    latency = [float(x) for x in re.findall(r"request->http200=([\d.]+)s ok=1", out)]
    # only steps that succeeded (rc 0) count: a failed step's "0.00 s" measures nothing
    noop = [float(x) for x in re.findall(r"instance-noop-\d: ([\d.]+) s wall, maxrss \d+ KB, rc 0\b", out)]
    destroy = re.search(r"instance-destroy: ([\d.]+) s wall, maxrss \d+ KB, rc 0\b", out)
    report = re.search(r"report-destroy: ([\d.]+) s wall, maxrss \d+ KB, rc 0\b", out)
    rss = re.search(r"RSS KB: slapproxy \d+, supervisord (\d+)", out)
    failed = [line for line in out.splitlines() if re.search(r": [\d.]+ s wall, .*rc [1-9]", line)]
    if failed:
        print(f"slapos.core: {len(failed)} steps of the anchor's run failed, first: {failed[0]}")
    result = {}
    if latency:
        value = statistics.median(latency)
        result["request -> ready, warm node (CLI --wait)"] = (value, f"{value:.2f} s (request -> HTTP 200)")
    if destroy and report:
        value = float(destroy.group(1)) + float(report.group(1))
        result["destroy -> partition free (CLI --wait)"] = (value, f"{value:.2f} s (node instance + report)")
    if noop:
        value = statistics.median(noop)
        result[noop_row] = (None, f"{value:.2f} s for 1 partition (not comparable: no ratio)")
    if rss:
        result["agent idle RSS"] = (None, f"(supervisord {int(rss.group(1)) / 1024:.0f} MB node-wide)")
    for name in ("request -> ready, warm node (CLI --wait)", "destroy -> partition free (CLI --wait)"):
        result.setdefault(name, (None, "failed: the anchor's run measured nothing for it"))
    return result


if __name__ == "__main__":
    main()

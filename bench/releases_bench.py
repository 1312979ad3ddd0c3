"""Real-workload releases: build time from scratch and from the binary cache, and
request -> ready on a warm node, for redis, boinc-client and condor (a personal
pool); for condor also submit -> job finished for a /bin/true job on an idle pool.
As root.

* from scratch: `slapnode node software` with the release's directory removed, the
  download cache (fetched .deb files) warm — the first, cold run is shown apart;
* from the binary cache: the same, once a trusted builder uploaded the build;
* request -> ready: `slapnode instance request … --wait` while `slapnode node run`
  runs, the release already built.

Each timed run is checked to be what its column names (`node software --json`
says how each release was made: built, or from the cache) or the run stops.
Targets: the BOINC client from the binary cache < 5 s (issue 4); a /bin/true job
submitted to an idle condor pool finished < 10 s (issue 12).

    .venv/bin/python bench/releases_bench.py [--runs 3] [--only condor]
"""

import argparse
import json
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import start_master, stop_process  # noqa: E402

from common import SLAPNODE, make_node, remove_node  # noqa: E402

from slapnode.client import Client  # noqa: E402
from slapnode.software import software_dir  # noqa: E402
RELEASES = ("redis", "boinc-client", "condor")
PARAMETERS = {"redis": [], "boinc-client": ["--parameter", "max-ncpus-pct=50"],
              "condor": ["--parameter", "condor-role=personal"]}
TRUE_JOB = """executable = /bin/true
transfer_executable = false
log = {log}
should_transfer_files = YES
queue
"""


def run(cmd, env=None, check=True):
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()[-500:]}")
    return time.monotonic() - started, result


def in_partition(config, part, command):
    """``command`` (shell) as the partition user, where its services run."""
    if config.isolation == "lxc":
        argv = ["lxc-attach", "-n", f"slapnode-{part.user}", "-u", str(part.uid), "-g",
                str(part.gid), "--clear-env", "--", "/bin/sh", "-c", command]
        return run(argv)
    return run(["setpriv", f"--reuid={part.uid}", f"--regid={part.gid}", "--clear-groups",
                "/bin/sh", "-c", command])


def submit_to_finished(config, view, runs):
    """Seconds from condor_submit to the job's end, for a /bin/true job, ``runs`` times."""
    from slapnode.deploy.partition import parts_of

    part = parts_of(config)[view["partition"]]
    conn = view["connection"]
    jobs = part.root / "srv" / "bench"
    in_partition(config, part, f"mkdir -p {jobs}")
    times = []
    for i in range(runs):
        log = jobs / f"true-{i}.log"
        in_partition(config, part, f"cat > {jobs}/true-{i}.sub <<'EOF'\n"
                     + TRUE_JOB.format(log=log) + "EOF")
        took, _ = in_partition(config, part, f"{conn['condor_submit']} {jobs}/true-{i}.sub >/dev/null"
                               f" && {conn['condor_bin']}/condor_wait -wait 60 {log} >/dev/null")
        times.append(took)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", action="append", choices=RELEASES, metavar="RELEASE",
                        help="measure only this release (repeatable; default: all)")
    args = parser.parse_args()
    releases = tuple(args.only or RELEASES)
    if os.geteuid() != 0:
        sys.exit("run as root")
    base = Path(tempfile.mkdtemp(prefix="snbench-rel-"))
    os.chmod(base, 0o755)
    tag = secrets.token_hex(2)
    proc = agent = config = None
    table = []
    notes = []
    try:
        proc, url, admin = start_master(base / "master")
        a = Client(url, admin)
        urls = {name: f"{url}/software-releases/{name}/software.cfg" for name in releases}
        for name, release in urls.items():
            a.add_software(release, name)
        user_token = a.add_user("bench")["token"]
        isolation = "lxc" if shutil.which("lxc-execute") else "user"
        config, path = make_node(url, a, base, f"snrb{tag}", 2, isolation, "10.248.0.0/24")
        software = SLAPNODE + ["node", "software", "--config", str(path), "--force", "--json"]

        def made(name, how):
            """Time one `node software` run that must make ``name`` the way ``how`` says."""
            took, result = run(software)
            hows = {r["url"]: r["how"] for r in json.loads(result.stdout)}
            if hows.get(urls[name]) != how:
                raise RuntimeError(f"{name}: expected a {how} run, the node says "
                                   f"{hows.get(urls[name])!r}")
            return took

        def wipe(name):
            shutil.rmtree(software_dir(config.software_root, urls[name]), ignore_errors=True)

        for name in releases:
            print(f"{name}: building ...", flush=True)
            a.supply(urls[name], "bench")
            cold, result = run(software, check=False)
            if result.returncode != 0:
                reason = (result.stderr.strip().splitlines() or ["?"])[-1]
                table.append((name, f"fails in {cold:.2f} s: {reason[:110]}", "", "", ""))
                a.supply(urls[name], "bench", state="destroyed")
                run(software, check=False)
                continue
            scratch = []
            for _ in range(args.runs):
                wipe(name)
                scratch.append(made(name, "built"))
            a.set_trusted("bench")
            wipe(name)
            made(name, "built")                 # builds once more and uploads
            a.set_trusted("bench", False)       # installs below must come from the cache
            cached = []
            for _ in range(args.runs):
                wipe(name)
                cached.append(made(name, "cache"))
            table.append([name, f"{cold:.2f} s", f"{statistics.median(scratch):.2f} s",
                          f"{statistics.median(cached):.2f} s", ""])
            if name == "boinc-client":
                target = statistics.median(cached) < 5
                notes.append(f"BOINC client from the binary cache: {statistics.median(cached):.2f} s "
                             f"(target < 5 s): {'ok' if target else 'NOT MET'}")

        log = open(base / "agent.log", "w")
        agent = subprocess.Popen(SLAPNODE + ["node", "run", "--config", str(path)], stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(2)
        env = {**os.environ, "SLAPNODE_MASTER": url, "SLAPNODE_TOKEN": user_token,
               "SLAPNODE_CLIENT_CONFIG": "/nonexistent"}
        for row in table:
            if row[0] not in PARAMETERS:
                continue
            print(f"{row[0]}: request -> ready ...", flush=True)
            times = []
            for i in range(args.runs):
                title = f"{row[0]}-{i}"
                times.append(run(SLAPNODE + ["instance", "request", title, row[0], *PARAMETERS[row[0]],
                                             "--wait", "120"], env)[0])
                if row[0] == "condor" and i == 0:
                    view = json.loads(run(SLAPNODE + ["instance", "show", title, "--json"], env)[1].stdout)
                    print("condor: submit -> finished ...", flush=True)
                    jobs = submit_to_finished(config, view, args.runs)
                    notes.append(f"condor, a /bin/true job on an idle personal pool, submit -> "
                                 f"finished: median {statistics.median(jobs):.2f} s (runs "
                                 + ", ".join(f"{t:.2f}" for t in jobs) + "; target < 10 s): "
                                 + ("ok" if statistics.median(jobs) < 10 else "NOT MET"))
                run(SLAPNODE + ["instance", "destroy", title, "--wait", "60"], env)
            row[4] = f"{statistics.median(times):.2f} s"
    finally:
        if agent is not None:
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(15)
        if config is not None:
            remove_node(config, f"snrb{tag}")
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(base, ignore_errors=True)

    print(f"\n{'release':14} {'first build':>12} {'from scratch':>13} {'from cache':>11} "
          f"{'request->ready':>15}")
    for name, cold, scratch, cached, ready in table:
        print(f"{name:14} {cold:>12} {scratch:>13} {cached:>11} {ready:>15}")
    print(f"(medians of {args.runs} runs; first build = cold download cache; from scratch = "
          "release directory removed, downloaded .deb files kept; whole CLI commands)")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()

"""Format benchmark: slapnode vs slapos.core, side by side, as root.

For each size (10 and 100 partitions): format from scratch, then a re-run
with nothing to do, each timed as the whole CLI command (interpreter start-up
included), medians of ``--runs`` runs. The same with ``slapos node format``
from slapos.core (PyPI, in its own virtualenv, Python 3.12, with slapproxy as
its master), users and network alteration on, in the same run, and the ratio.

slapos.core sleeps 2 s after every address it adds, so its 100-partition
format takes about 7 minutes a run: it runs only for the sizes in
``--slapos-sizes`` (default 10).

Targets (issue 3): 100 partitions from scratch < 5 s, no-op re-run < 0.5 s; (issue 18)
no-op re-run of 10 partitions < 0.3 s, of 100 < 1 s.

    .venv/bin/python bench/format_bench.py [--runs 3] [--slapos-runs 3] [--slapos-sizes 10,100]

Everything it makes has names of its own (users snbu*/slosu*, bridges snbbr0/slosbr0)
and is removed at the end, also on failure.
"""

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import SLAPOS_NODE_CFG, SLAPPROXY_CFG, slapproxy, timed  # noqa: E402
from tests.conftest import free_port, start_master, stop_process  # noqa: E402

from slapnode import nodeconfig  # noqa: E402
from slapnode.client import Client  # noqa: E402

SLAPNODE = [sys.executable, "-m", "slapnode"]
WORK = Path(os.environ.get("SLAPNODE_BENCH_DIR", "/opt/slapnode-bench"))


# -- slapnode --------------------------------------------------------------------------

def slapnode_runs(master_url, admin, size, runs, tmp):
    scratch, noop = [], []
    for run in range(runs):
        token = Client(master_url, admin).create_enrollment_token(f"bench-{size}-{run}", scope="public")["token"]
        cfg = tmp / f"node-{size}-{run}.cfg"
        subprocess.run(SLAPNODE + ["node", "register", "--master", master_url, "--token", token,
                                   "--config", str(cfg), "--partitions", str(size),
                                   "--user-prefix", "snbu", "--bridge", "snbbr0",
                                   "--instance-root", str(tmp / "srv"),
                                   "--software-root", str(tmp / "soft"),
                                   "--ipv4-range", "10.223.0.0/16", "--isolation", "user"],
                       check=True, capture_output=True)
        config = nodeconfig.load(cfg)
        config.software_user = "snbsoft"
        nodeconfig.save(config, cfg)
        command = SLAPNODE + ["node", "format", "--config", str(cfg), "--json"]
        try:
            took, done = timed_json(command)
            if len(done["added"]) != size:      # "from scratch" must have made them all
                raise RuntimeError(f"the first format added {len(done['added'])} of {size} "
                                   "partitions: not a run from scratch")
            scratch.append(took)
            again = []
            for _ in range(3):
                took, done = timed_json(command)
                if done["added"] or done["removed"] or done["addresses_added"] or \
                        done["addresses_removed"]:
                    raise RuntimeError(f"the re-run changed something ({done}): not a no-op")
                again.append(took)
            noop.append(statistics.median(again))
        finally:
            gone = subprocess.run(SLAPNODE + ["node", "unformat", "--force", "--config", str(cfg)],
                                  capture_output=True, text=True)
            if gone.returncode != 0:            # the next "from scratch" would not be one
                raise RuntimeError(f"unformat failed: {gone.stderr.strip()[-500:]}")
    return statistics.median(scratch), statistics.median(noop)


def timed_json(command):
    """(seconds, the command's --json answer)."""
    import json
    import time

    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-500:]}")
    return took, json.loads(result.stdout)


# -- slapos.core -----------------------------------------------------------------------

SLAPOS_CFG = SLAPOS_NODE_CFG + """
[slapformat]
interface_name = slosbr0
create_tap = false
partition_amount = {size}
computer_xml = {base}/var/slapos.xml
log_file = {base}/log/format.log
partition_base_name = slappart
user_base_name = slosu
software_user = slossoft
tap_base_name = slostap
tap_ipv6 = false
ipv4_local_network = 10.42.0.0/16
""" + SLAPPROXY_CFG


def slapos_python():
    for candidate in sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12")):
        return str(candidate)
    return shutil.which("python3.12")


def slapos_venv():
    venv = WORK / "slapos-venv"
    if not (venv / "bin" / "slapos").exists():
        python = slapos_python()
        if python is None:
            return None, "no Python 3.12 here (slapos.core 1.26 needs >= 3.12)"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "slapos.core",
                        "slapos.libnetworkcache"], check=True)
    return venv / "bin" / "slapos", None


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def slapos_cleanup(base):
    for user in pwd.getpwall():
        if user.pw_name.startswith("slosu") or user.pw_name == "slossoft":
            subprocess.run(["userdel", user.pw_name], capture_output=True)
    import grp
    for group in grp.getgrall():
        if group.gr_name.startswith("slosu") or group.gr_name == "slossoft":
            subprocess.run(["groupdel", group.gr_name], capture_output=True)
    routes = ip("-6", "route", "show", "table", "local", check=False).stdout
    for line in routes.splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[0] == "local" and parts[1].startswith("fd42:5a1a:0:1:") \
                and "dev lo" in line:
            ip("-6", "route", "del", "local", parts[1], "dev", "lo", "table", "local", check=False)
    ip("link", "del", "slosbr0", check=False)
    shutil.rmtree(base, ignore_errors=True)


def slapos_runs(slapos, size, runs):
    base = WORK / "slapos-run"
    nonlocal_bind = Path("/proc/sys/net/ipv6/ip_nonlocal_bind").read_text().strip()
    scratch, noop = [], []
    for _ in range(runs):
        slapos_cleanup(base)
        for sub in ("opt", "srv", "var", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        port = free_port()
        cfg = base / "slapos.cfg"
        cfg.write_text(SLAPOS_CFG.format(port=port, base=base, size=size))
        try:
            with slapproxy(slapos, cfg, port):
                ip("link", "add", "slosbr0", "type", "bridge")
                ip("addr", "add", "10.42.0.1/16", "dev", "slosbr0")
                ip("-6", "addr", "add", "fd42:5a1a:0:1::1/64", "dev", "slosbr0")
                ip("link", "set", "slosbr0", "up")
                command = [str(slapos), "node", "format", "--cfg", str(cfg), "--now",
                           "--alter_user", "True", "--alter_network", "True"]
                scratch.append(timed(command))
                noop.append(statistics.median(timed(command) for _ in range(3)))
        finally:
            slapos_cleanup(base)
            Path("/proc/sys/net/ipv6/ip_nonlocal_bind").write_text(nonlocal_bind)
    return statistics.median(scratch), statistics.median(noop)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slapos-runs", type=int, default=3)
    parser.add_argument("--slapos-sizes", default="10", help="comma-separated; '' skips slapos")
    parser.add_argument("--sizes", default="10,100")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: formatting creates users and interfaces")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    slapos_sizes = {int(s) for s in args.slapos_sizes.split(",") if s}

    tmp = Path(tempfile.mkdtemp(prefix="slapnode-bench-format-"))
    os.chmod(tmp, 0o755)          # the partition users must reach their homes under it
    proc = None
    results = {}
    try:
        proc, url, admin = start_master(tmp / "master")
        for size in sizes:
            print(f"slapnode: {size} partitions x {args.runs} runs ...", flush=True)
            results[("slapnode", size)] = slapnode_runs(url, admin, size, args.runs, tmp)
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    slapos_note = ""
    if slapos_sizes:
        slapos, why = slapos_venv()
        if slapos is None:
            slapos_note = f"slapos.core not run: {why}"
        else:
            for size in sorted(slapos_sizes):
                print(f"slapos.core: {size} partitions x {args.slapos_runs} runs "
                      f"(about {4 * size + 2} s each) ...", flush=True)
                results[("slapos", size)] = slapos_runs(slapos, size, args.slapos_runs)

    print(f"\n{'scenario':38} {'slapnode':>10} {'slapos.core':>12} {'ratio':>8}  target")
    for size in sizes:
        for label, column, target in (
                ("from scratch", 0, "< 5 s" if size == 100 else ""),
                ("re-run, nothing to do", 1, {10: "< 0.3 s (issue 18)",
                                              100: "< 0.5 s (issue 3), < 1 s (issue 18)"}.get(size, ""))):
            ours = results[("slapnode", size)][column]
            theirs = results.get(("slapos", size))
            other = f"{theirs[column]:.2f} s" if theirs else "-"
            ratio = f"{theirs[column] / ours:.1f}x" if theirs else "-"
            print(f"{f'{size} partitions, {label}':38} {ours:>8.2f} s {other:>12} {ratio:>8}  {target}")
    print(f"(medians; slapnode {args.runs} runs, slapos.core {args.slapos_runs} runs; "
          "ratio = slapos.core time / slapnode time)")
    if slapos_note:
        print(slapos_note)


if __name__ == "__main__":
    main()

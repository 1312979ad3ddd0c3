"""Software benchmark: building the hello release, side by side with slapos.core.

slapnode, each as the whole CLI command (interpreter start-up included), medians:
* hello from scratch: ``slapnode software build`` into an empty software root;
* no-op rebuild: the same command again;
* install from the binary cache: ``slapnode node software`` on a node whose
  software root is empty while a trusted builder already uploaded the build.

slapos.core (PyPI, its own virtualenv under /opt/slapnode-bench, slapproxy as
master): ``slapos node software`` building the anchor's equivalent minimal
profile (../shared/anchors/slapos/sr/: http.server instance, eggs from PyPI),
from scratch (its software directory removed; pip/egg downloads cached) and
as a no-op; then the ratio.

Targets (issue 4): hello from scratch < 2 s, no-op < 0.2 s (the work, see the
note on start-up). The cache install of hello has no target of its own (BOINC's,
< 5 s, is measured by releases_bench.py). Every figure is checked to be what it
names (a build, a no-op, an install from the cache) or the run stops.

    .venv/bin/python bench/software_bench.py [--runs 3] [--slapos-runs 3] [--no-slapos]
"""

import argparse
import json
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
from slapnode.format import plan, users  # noqa: E402

SLAPNODE = [sys.executable, "-m", "slapnode"]
HELLO = str(ROOT / "software-releases" / "hello" / "software.cfg")
WORK = Path(os.environ.get("SLAPNODE_BENCH_DIR", "/opt/slapnode-bench"))
ANCHOR = ROOT.parent / "shared" / "anchors" / "slapos"


def reachable_dir(prefix):
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path


def own(path, user):
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


# -- slapnode --------------------------------------------------------------------------

def timed_output(cmd):
    """(seconds, stdout) of a command that must succeed."""
    import time

    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip()[-500:]}")
    return took, result.stdout


def slapnode_bench(runs, user):
    """Each figure is checked to be what it names: a build, then builds that did nothing."""
    scratch, noop = [], []
    for _ in range(runs):
        root = reachable_dir("snbench-sw-")
        try:
            cmd = SLAPNODE + ["software", "build", HELLO, "--software-root", str(root), "--user", user]
            took, out = timed_output(cmd)
            if not out.startswith("built"):
                raise RuntimeError(f"the first build did not build: {out.strip()}")
            scratch.append(took)
            again = []
            for _ in range(3):
                took, out = timed_output(cmd)
                if not out.startswith("up to date"):
                    raise RuntimeError(f"the re-run was not a no-op: {out.strip()}")
                again.append(took)
            noop.append(statistics.median(again))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return statistics.median(scratch), statistics.median(noop)


def cache_bench(runs, user):
    tmp = reachable_dir("snbench-cache-")
    proc = None
    try:
        proc, url, admin = start_master(tmp / "master")
        admin_client = Client(url, admin)
        release = f"{url}/software-releases/hello/software.cfg"
        admin_client.add_software(release, "hello")
        root = tmp / "software"
        root.mkdir()
        own(root, user)
        configs = {}
        for name in ("builder", "volunteer"):
            token = admin_client.create_enrollment_token(name)["token"]
            credential = Client(url).enroll(token)["credential"]
            config = nodeconfig.NodeConfig(master=url, credential=credential, name=name,
                                           software_root=str(root), software_user=user,
                                           state_dir=str(tmp / f"state-{name}"))
            configs[name] = nodeconfig.save(config, tmp / f"{name}.cfg")
            admin_client.supply(release, name)
        admin_client.set_trusted("builder")
        timed(SLAPNODE + ["node", "software", "--config", str(configs["builder"])])
        times = []
        for _ in range(runs):
            for entry in root.iterdir():
                if entry.name != ".download-cache":
                    shutil.rmtree(entry)
            took, out = timed_output(SLAPNODE + ["node", "software", "--json", "--config",
                                                 str(configs["volunteer"])])
            hows = [r["how"] for r in json.loads(out)]
            if hows != ["cache"]:       # a refused upload or a failed lookup would build
                raise RuntimeError(f"the volunteer did not install from the cache: {hows}")
            times.append(took)
        return statistics.median(times)
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


# -- slapos.core -----------------------------------------------------------------------

SLAPOS_CFG = SLAPOS_NODE_CFG + SLAPPROXY_CFG


def slapos_python():
    """A Python 3.12 the software user can run (pyenv's lives in /root, 0700)."""
    copy = WORK / "py312"
    if (copy / "bin" / "python3.12").exists():
        return copy / "bin" / "python3.12"
    sources = sorted(Path.home().glob(".pyenv/versions/3.12*"))
    if not sources:
        return None
    subprocess.run(["apt-get", "install", "-y", "-qq", "patchelf", "rsync"], check=True,
                   capture_output=True)
    subprocess.run(["rsync", "-a", "--exclude", "lib/python3.12/test", "--exclude",
                    "lib/python3.12/site-packages/*", f"{sources[0]}/", f"{copy}/"], check=True)
    subprocess.run(["patchelf", "--set-rpath", "$ORIGIN/../lib", str(copy / "bin" / "python3.12")],
                   check=True)
    return copy / "bin" / "python3.12"


def slapos_bench(runs, user):
    python = slapos_python()
    if python is None:
        return None, "no Python 3.12 here (slapos.core 1.26 needs >= 3.12)"
    venv = WORK / "slapos-sw-venv"
    if not (venv / "bin" / "slapos").exists():
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "slapos.core",
                        "slapos.libnetworkcache"], check=True)
    slapos = venv / "bin" / "slapos"
    base = WORK / "slapos-sw-run"
    shutil.rmtree(base, ignore_errors=True)
    for sub in ("opt", "srv", "var", "sr"):
        (base / sub).mkdir(parents=True)
    os.chmod(WORK, 0o755)
    for name in ("software.cfg", "instance.cfg.in"):
        text = (ANCHOR / "sr" / name).read_text().replace("@A@", str(base))
        (base / "sr" / name).write_text(text)
    for path in (base, base / "sr", base / "opt"):
        own(path, user)
    port = free_port()
    cfg = base / "slapos.cfg"
    cfg.write_text(SLAPOS_CFG.format(port=port, base=base))
    env = {**os.environ, "SLAPOS_CONFIGURATION": str(cfg), "SLAPOS_CLIENT_CONFIGURATION": str(cfg)}
    try:
        with slapproxy(slapos, cfg, port, env):
            release = str(base / "sr" / "software.cfg")
            subprocess.run([str(slapos), "supply", release, "slaposbench"], env=env, check=True,
                           capture_output=True)
            command = [str(slapos), "node", "software", "--now", "--cfg", str(cfg)]
            timed(command, env=env)                     # warm pip's and buildout's caches
            scratch, noop = [], []
            for _ in range(runs):
                for entry in (base / "opt").iterdir():
                    shutil.rmtree(entry)
                scratch.append(timed(command, env=env))
                noop.append(statistics.median(timed(command, env=env) for _ in range(3)))
        return (statistics.median(scratch), statistics.median(noop)), None
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slapos-runs", type=int, default=3)
    parser.add_argument("--no-slapos", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: builds run as a software user the benchmark creates")
    user = "snbenchsoft"
    users.create_user(user, "/nonexistent", plan.SOFTWARE_MARK)
    try:
        print(f"slapnode: hello x {args.runs} runs ...", flush=True)
        scratch, noop = slapnode_bench(args.runs, user)
        print("slapnode: binary cache ...", flush=True)
        cache = cache_bench(args.runs, user)
        slapos, why = (None, "skipped (--no-slapos)") if args.no_slapos else (None, None)
        if not args.no_slapos:
            print(f"slapos.core: anchor minimal release x {args.slapos_runs} runs ...", flush=True)
            slapos, why = slapos_bench(args.slapos_runs, user)
    finally:
        users.delete_user(user)

    def row(label, ours, theirs, target):
        other = f"{theirs:.2f} s" if theirs is not None else "-"
        ratio = f"{theirs / ours:.1f}x" if theirs is not None else "-"
        print(f"{label:38} {ours:>8.2f} s {other:>12} {ratio:>8}  {target}")

    print(f"\n{'scenario':38} {'slapnode':>10} {'slapos.core':>12} {'ratio':>8}  target")
    row("minimal release, from scratch", scratch, slapos[0] if slapos else None, "< 2 s")
    row("no-op rebuild", noop, slapos[1] if slapos else None, "< 0.2 s")
    row("hello from the binary cache", cache, None, "(none; BOINC's: releases_bench.py)")
    print(f"(medians; slapnode {args.runs} runs, slapos.core {args.slapos_runs} runs; whole "
          "commands, interpreter start-up included; ratio = slapos.core / slapnode)")
    if why:
        print(f"slapos.core: {why}")


if __name__ == "__main__":
    main()

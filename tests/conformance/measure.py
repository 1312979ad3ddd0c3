"""How slapnode's profile engine compares with zc.buildout on real SlapOS profiles.

For every ``component/*/buildout.cfg`` of a SlapOS checkout, both expand every
section (slapnode: ``parser.load`` + ``expand.Profile``; zc.buildout 6.0.1: the
oracle, in a virtualenv of its own made here from PyPI) and the results are
compared option by option, leaving out [buildout]'s own defaults that slapnode
does not define. Prints how many expand the same, how many differ (with the
first differences), how many slapnode refuses (and why) and how many buildout
refuses.

    .venv/bin/python tests/conformance/measure.py SLAPOS_CHECKOUT [--venv DIR] [--jobs 2]
        [--timeout 60] [--sample N]
"""

import argparse
import collections
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from slapnode.profile import expand, parser  # noqa: E402

ORACLE_VERSION = "zc.buildout==6.0.1"
SR = "/SR"
# [buildout] options zc.buildout defines for its own machinery (eggs, logging, ...)
BUILDOUT_OWN = {"allow-hosts", "allow-picked-versions", "eggs-directory-version", "find-links",
                "install-from-cache", "installed", "log-format", "log-level", "newest", "offline",
                "prefer-final", "python", "show-picked-versions", "socket-timeout",
                "update-versions-file", "use-dependency-links", "allow-unknown-extras",
                "versions", "executable", "eggs-directory"}


SLAPNODE_OWN = {"download-cache", "software-url"}      # [buildout] options slapnode adds


def oracle_venv(where):
    python = Path(where) / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", ORACLE_VERSION], check=True)
    return python


def slapnode_expand(path):
    """Every section of ``path`` as slapnode's engine expands it (the engine's own
    [buildout] directories, as a build in /SR would have them)."""
    from slapnode.software import engine

    profile = engine.load_profile(str(path), SR, f"{SR}/.download-cache")
    out = {}
    for name in profile.raw.sections:
        try:
            out[name] = profile.section(name)
        except parser.ProfileError as exc:
            out[name] = {"__error__": str(exc)}
    return out


def buildout_expand(python, path, scratch, timeout):
    env = {**os.environ, "ORACLE_DIR": scratch}
    try:
        result = subprocess.run([str(python), str(HERE / "oracle.py"), str(path)],
                                capture_output=True, text=True, env=env, cwd=scratch,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timeout": f"zc.buildout took more than {timeout} s"}
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"refused": (result.stderr.strip().splitlines() or ["no output"])[-1]}


def normalise(text, scratch, python):
    """buildout's value as slapnode means it: its directory is /SR, its eggs directory
    slapnode's (no ``v5``), its interpreter slapnode's, and ``$${`` is ``${`` (SlapOS's
    fork of zc.buildout unescapes it; upstream keeps it; slapnode follows the fork, whose
    releases rely on it)."""
    return (text.replace(scratch, SR).replace(f"{SR}/eggs/v5", f"{SR}/eggs")
            .replace(str(python), sys.executable).replace("$${", "${"))


def compare(mine, theirs, fix=lambda text: text):
    """[(section, option, mine, theirs)] where the two differ (errors included);
    ``fix`` turns buildout's text into what slapnode means by it."""
    differences = []
    for section in sorted(set(mine) | set(theirs)):
        a, b = mine.get(section), theirs.get(section)
        if a is None and section in ("versions", "buildout"):
            continue            # buildout's own section and pins of its eggs
        if a is None or b is None:
            if (b or {}).get("__error__") is None:
                differences.append((section, "*", "present" if a else "absent",
                                    "present" if b else "absent"))
            continue
        if "__error__" in b:
            continue            # buildout cannot expand it either
        for option in sorted(set(a) | set(b)):
            if section == "buildout" and option in BUILDOUT_OWN | SLAPNODE_OWN or \
                    section == "versions" and option in ("zc.buildout", "zc.recipe.egg"):
                continue
            if option.startswith("_") or option == "<":
                continue
            left = a.get(option)
            right = b.get(option)
            right = fix(right) if right is not None else None
            if left != right:
                differences.append((section, option, left, right))
    return differences


def one(python, path, timeout):
    with tempfile.TemporaryDirectory(prefix="oracle-") as scratch:
        theirs = buildout_expand(python, path, scratch, timeout)
        try:
            started = time.monotonic()
            mine = slapnode_expand(path)
            took = time.monotonic() - started
        except parser.ProfileError as exc:
            return path, "refused", str(exc), theirs.get("refused"), 0.0
        if "refused" in theirs:
            return path, "buildout refuses", theirs["refused"], None, took
        if "timeout" in theirs:
            return path, "buildout too slow", theirs["timeout"], None, took
        differences = compare(mine, theirs["ok"], lambda text: normalise(text, scratch, python))
        return path, "differs" if differences else "same", differences, None, took


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout")
    ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "slapnode-zc-buildout"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--show", type=int, default=8, help="differences shown per kind")
    ap.add_argument("--timeout", type=float, default=60, help="seconds zc.buildout gets per profile")
    ap.add_argument("--sample", type=int, default=0, help="every Nth profile only (0: all)")
    ap.add_argument("--only", nargs="*", default=(), help="these components only")
    ap.add_argument("--progress", action="store_true", help="a line per profile as it is done")
    args = ap.parse_args()
    python = oracle_venv(args.venv)
    paths = sorted(Path(args.checkout).glob("component/*/buildout.cfg"))
    if args.sample:
        paths = paths[::args.sample]
    if args.only:
        paths = [p for p in paths if p.parent.name in args.only]
    results = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for result in pool.map(lambda p: one(python, p, args.timeout), paths):
            results.append(result)
            if args.progress:
                print(f"{result[0].parent.name}: {result[1]}", flush=True)
    counts = collections.Counter(r[1] for r in results)
    took = sorted(r[4] for r in results if r[4])
    if took:
        print(f"slapnode expands a profile in {took[len(took) // 2] * 1000:.0f} ms median, "
              f"{took[-1] * 1000:.0f} ms at most")
    print(f"{len(paths)} component profiles: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    reasons = collections.Counter()
    for path, kind, detail, theirs, _ in results:
        if kind == "refused":
            reasons[detail.split(": ", 1)[-1][:90]] += 1
    for reason, n in reasons.most_common(args.show):
        print(f"  refused x{n}: {reason}")
    options = collections.Counter()
    for path, kind, detail, _, _ in results:
        if kind == "differs":
            for section, option, left, right in detail:
                options[(option, "mine" if right is None else "theirs" if left is None else "both")] += 1
    for (option, which), n in options.most_common(args.show):
        print(f"  differs x{n}: option {option!r} ({which})")
    shown = 0
    for path, kind, detail, _, _ in results:
        if kind == "differs" and shown < args.show:
            section, option, left, right = detail[0]
            print(f"  e.g. {path.parent.name} [{section}] {option}: slapnode {left!r:.80} "
                  f"buildout {right!r:.80}")
            shown += 1


if __name__ == "__main__":
    main()

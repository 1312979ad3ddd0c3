"""How fast slapnode expands real SlapOS profiles, beside zc.buildout 6.0.1.

Expands the pinned corpus of the conformance test (tests/conformance/corpus: SlapOS's
``stack/slapos.cfg`` and its components, no checkout needed): every section, each run
in a fresh process as a build would (the import of the engine counted apart). With
``--buildout``, zc.buildout itself (the conformance oracle, in its own virtualenv) expands
``stack/slapos.cfg`` once beside it, and the ratio is printed.

    .venv/bin/python bench/profile_bench.py --runs 5 [--buildout]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, print_rows

CORPUS = ROOT / "tests" / "conformance" / "corpus"
TARGET = 1.0            # seconds for stack/slapos.cfg: "well under a second"

EXPAND = """
import json, sys, time
started = time.monotonic()
from tests.conformance import measure
imported = time.monotonic()
sections = measure.slapnode_expand(sys.argv[1])
done = time.monotonic()
errors = sum('__error__' in options for options in sections.values())
print(json.dumps({"import": imported - started, "expand": done - imported,
                  "sections": len(sections), "errors": errors}))
"""


def slapnode_once(profile):
    result = subprocess.run([sys.executable, "-c", EXPAND, str(profile)], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def buildout_once(profile, venv):
    sys.path.insert(0, str(ROOT))
    from tests.conformance import measure

    python = measure.oracle_venv(venv)
    with tempfile.TemporaryDirectory(prefix="oracle-") as scratch:
        started = time.monotonic()
        out = measure.buildout_expand(python, profile, scratch, timeout=3600)
        took = time.monotonic() - started
    return took, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--buildout", action="store_true", help="also time zc.buildout once")
    ap.add_argument("--venv", default=str(tempfile.gettempdir() + "/slapnode-zc-buildout"))
    args = ap.parse_args()
    rows = []
    profiles = [CORPUS / "stack" / "slapos.cfg"] + sorted(CORPUS.glob("component/*/buildout.cfg"))
    stack_median = None
    for profile in profiles:
        runs = [slapnode_once(profile) for _ in range(args.runs if profile == profiles[0] else 1)]
        expand = statistics.median(r["expand"] for r in runs)
        name = str(profile.relative_to(CORPUS))
        row = {"profile": name, "sections": runs[0]["sections"], "errors": runs[0]["errors"],
               "expand": f"{expand * 1000:.0f} ms", "import": f"{runs[0]['import'] * 1000:.0f} ms",
               "runs": len(runs)}
        if profile == profiles[0]:
            stack_median = expand
            row["ok"] = "yes" if expand < TARGET else "NO"
        rows.append(row)
    component = statistics.median(float(r["expand"].split()[0]) for r in rows[1:])
    print(f"slapnode: stack/slapos.cfg in {stack_median * 1000:.0f} ms (median of {args.runs}, "
          f"target < {TARGET:.0f} s); the corpus's {len(rows) - 1} component profiles "
          f"{component:.0f} ms median")
    print_rows(rows[:1] + sorted(rows[1:], key=lambda r: -float(r["expand"].split()[0]))[:8],
               [("profile", "profile"), ("sections", "sections"), ("not alone", "errors"),
                ("expand", "expand"), ("engine import", "import"), ("runs", "runs"),
                ("ok", "ok")])
    print("(not alone: macro sections that only expand through <=, as under buildout)")
    if args.buildout:
        took, out = buildout_once(profiles[0], args.venv)
        state = "expanded" if "ok" in out else f"failed: {out}"
        print(f"zc.buildout 6.0.1: stack/slapos.cfg {state} in {took:.1f} s, once; "
              f"slapnode is {took / stack_median:.0f}x faster")


if __name__ == "__main__":
    main()

"""Record the pinned corpus and what zc.buildout 6.0.1 computes for it.

Copies the chosen SlapOS profiles, with every file they extend, from a SlapOS checkout
into ``corpus/`` (same relative paths), then expands each with zc.buildout itself (the
oracle, in its own virtualenv) and writes ``expected/<name>.json``. The test
``tests/test_buildout_conformance.py`` then compares slapnode's expansion of the same
files with these records, with no SlapOS checkout and no zc.buildout at test time.

    .venv/bin/python tests/conformance/record.py SLAPOS_CHECKOUT [--venv DIR]

The records hold ``@CORPUS@`` for the corpus directory and ``@PYTHON@`` for the
interpreter, and the buildout directory as ``/SR`` (see measure.normalise). The
oracle evaluates conditional sections on this machine, so the records say which
Python and machine they were made on; the test refuses to compare on another.
"""

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tests.conformance import measure  # noqa: E402
from slapnode.profile import parser  # noqa: E402

CORPUS = HERE / "corpus"
EXPECTED = HERE / "expected"
# component profiles that between them use every rule of issue 13: conditional headers,
# += and -= (also under <=), indented # lines, blocks with blank lines, $${, eggs-directory
COMPONENTS = ("bash", "boost-lib", "ccache", "dash", "fonts", "freetype", "gcc", "golang",
              "icu", "libpsl", "libxml2", "lua", "mariadb", "nss", "openssl", "patch",
              "perl-URI", "python-pim-dm", "python3", "randomsleep", "redis", "screen",
              "sqlite3", "tar", "util-linux", "varnish", "yappi")
STACKS = ("stack/slapos.cfg",)


def profiles():
    return [f"component/{name}/buildout.cfg" for name in COMPONENTS] + list(STACKS)


def record_name(relative):
    return relative.replace("/buildout.cfg", "").replace("/", "--").removesuffix(".cfg")


def environment():
    return {"python": "%d.%d" % sys.version_info[:2], "machine": platform.machine(),
            "system": platform.system()}


def copy_corpus(checkout):
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    files = set()
    for relative in profiles():
        files.update(parser.load(str(checkout / relative)).files)
    for name in sorted(files):
        target = CORPUS / Path(name).relative_to(checkout)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(name, target)
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    (CORPUS / "SOURCE").write_text(
        f"https://github.com/SlapOS/slapos at {commit}\n"
        f"copied by tests/conformance/record.py: {len(files)} files\n")
    return len(files)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout", type=Path)
    ap.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "slapnode-zc-buildout"))
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    python = measure.oracle_venv(args.venv)
    print(f"corpus: {copy_corpus(args.checkout.resolve())} files")
    EXPECTED.mkdir(exist_ok=True)
    for relative in profiles():
        with tempfile.TemporaryDirectory(prefix="oracle-") as scratch:
            theirs = measure.buildout_expand(python, CORPUS / relative, scratch, args.timeout)
            if "ok" not in theirs:
                sys.exit(f"{relative}: zc.buildout: {theirs}")

            def fix(text):
                return measure.normalise(text, scratch, python).replace(
                    str(CORPUS), "@CORPUS@").replace(sys.executable, "@PYTHON@")

            sections = {name: {k: fix(v) for k, v in options.items()}
                        for name, options in theirs["ok"].items()}
        record = {"profile": relative, "oracle": measure.ORACLE_VERSION,
                  "recorded_on": environment(), "sections": sections}
        (EXPECTED / f"{record_name(relative)}.json").write_text(
            json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"{relative}: {len(sections)} sections")


if __name__ == "__main__":
    main()

"""The oracle: a profile expanded by zc.buildout itself, as JSON on stdout.

Run with the interpreter of a virtualenv that has zc.buildout (see measure.py);
no recipe is ever loaded (``Options.initialize`` does nothing), the buildout is
offline, and its directory is ``$ORACLE_DIR`` (it creates ``eggs/`` there).
    ORACLE_DIR=/tmp/x python oracle.py PROFILE
"""
import json
import os
import sys

import zc.buildout.buildout as bo

bo.Options.initialize = lambda self: None      # never load a recipe
path = sys.argv[1]
out = {}
try:
    b = bo.Buildout(path, [("buildout", "offline", "true"), ("buildout", "directory", os.environ["ORACLE_DIR"]),
                           ("buildout", "newest", "false")], use_user_defaults=False)
    for name in sorted(b._raw):
        try:
            section = b[name]
            out[name] = {k: v for k, v in section.items()}
        except Exception as exc:
            out[name] = {"__error__": f"{type(exc).__name__}: {exc}"[:300]}
    print(json.dumps({"ok": out}))
except BaseException as exc:
    print(json.dumps({"refused": f"{type(exc).__name__}: {exc}"[:300]}))

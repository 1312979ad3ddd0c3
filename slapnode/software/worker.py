"""The build worker: one software release, run as the unprivileged software user.

``python -m slapnode.software.worker build URL DIRECTORY CACHE [--offline]``
``python -m slapnode.software.worker unpack ARCHIVE DIRECTORY DIGEST``
``python -m slapnode.software.worker deploy INSTANCE_PROFILE PARTITION GIVEN.json``

The node (root) starts it with the software user's uid and gid (or, to
deploy an instance, the partition user's), so that nothing of a build or a
deployment ever runs as root. Exit code 0 on success; on failure the
last line of stderr is the reason (the full story is in the build log).
"""

import os
import subprocess
import sys
import tarfile
from pathlib import Path


def run_as(uid, gid, home, args, cwd="/"):
    """Start this worker with ``args`` as uid:gid (no supplementary groups) when we are
    root, else as ourselves; a clean environment; returns the CompletedProcess."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1"}
    drop = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}
    return subprocess.run([sys.executable, "-m", "slapnode.software.worker", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=str(cwd), **drop)


def main(argv):
    command = argv[0] if argv else ""
    try:
        if command == "build":
            from . import engine

            url, directory, cache = argv[1:4]
            digest, built = engine.build(url, directory, cache, offline="--offline" in argv)
            print(f"{'built' if built else 'up to date'} {digest}")
        elif command == "deploy":
            import json

            from . import engine

            profile, directory, given = argv[1:4]
            with open(given, encoding="utf-8") as stream:
                overrides = json.load(stream)
            digest, built = engine.build(profile, directory,
                                         Path(directory) / "tmp" / ".download-cache",
                                         overrides=overrides)
            print(f"{'deployed' if built else 'unchanged'} {digest}")
        elif command == "unpack":
            archive, directory, digest = argv[1:4]
            unpack(archive, directory, digest)
            print(f"unpacked {digest}")
        else:
            print("usage: worker build URL DIR CACHE | unpack ARCHIVE DIR DIGEST", file=sys.stderr)
            return 2
    except Exception as exc:        # one line for the node to report; details in the log
        print(f"{type(exc).__name__}: {exc}" if not hasattr(exc, "message") else str(exc),
              file=sys.stderr)
        return 1
    return 0


def unpack(archive, directory, digest):
    """Lay a cached build out in ``directory``; ``.completed`` last."""
    from .engine import COMPLETED

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    completed = directory / COMPLETED
    if completed.exists():
        completed.unlink()
    from ..recipes import safe_extract

    with tarfile.open(archive) as tar:
        safe_extract(tar, directory, skip=(COMPLETED,))
    completed.write_text(digest + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

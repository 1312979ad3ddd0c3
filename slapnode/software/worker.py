"""The build worker: software releases, handled as the unprivileged software user.

``python -m slapnode.software.worker build URL DIRECTORY CACHE [--offline]``
``python -m slapnode.software.worker digests SOFTWARE_ROOT CACHE URL...``
``python -m slapnode.software.worker unpack - DIRECTORY DIGEST``  (archive on stdin)
``python -m slapnode.software.worker pack DIRECTORY``            (archive on stdout)

The node (root) starts it with the software user's uid and gid, so that
nothing of a release (its profile's files and URLs, its recipes, its
archives) is ever read, expanded or run as root. Archives travel on pipes:
root never hands the software user a path to chown or a file to swap.
Exit code 0 on success; on failure the last line of stderr is the reason
(the full story is in the build log).
"""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from .. import proc
from ..errors import SlapnodeError

BUILD_TIMEOUT = 4 * 3600.0


def run_as(uid, gid, home, args, cwd="/", timeout=BUILD_TIMEOUT, stdin=None, stdout=None,
           cancel=None, extra_env=None):
    """Run this worker with ``args`` as uid:gid (no supplementary groups) when we are
    root, else as ourselves, in a clean environment. ``stdin``/``stdout``: open files
    for an archive in or out; ``cancel``: an event that stops it (the agent stops).
    Returns a ``proc.Result``."""
    argv = [sys.executable, "-m", "slapnode.software.worker", *map(str, args)]
    drop = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}
    env = proc.clean_env(home, **(extra_env or {}))
    try:
        if stdin is None and stdout is None:
            return proc.run(argv, b"", timeout, 8 << 20, cancel=cancel, env=env, cwd=str(cwd),
                            **drop)
        done = subprocess.run(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                              stdout=stdout if stdout is not None else subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, cwd=str(cwd), timeout=timeout,
                              start_new_session=True, **drop)
        return proc.Result(done.returncode, done.stdout or b"", done.stderr[-65536:])
    except PermissionError as exc:
        raise SlapnodeError(
            f"uid {uid} cannot run {sys.executable} ({exc.strerror}): install slapnode in a "
            "virtualenv every user can read and traverse (e.g. python3 -m venv "
            "/opt/slapnode/venv), not under /root") from None
    except subprocess.TimeoutExpired:
        raise SlapnodeError(f"the worker ({args[0]}) did not finish within {timeout:.0f} s") from None


def digests(software_root, cache, urls):
    """{url: {"digest": ...} | {"error": one line}}: every profile expanded, as we are."""
    from . import engine, software_dir

    result = {}
    for url in urls:
        try:
            profile = engine.load_profile(url, software_dir(software_root, url), cache)
            result[url] = {"digest": profile.digest()}
        except Exception as exc:
            result[url] = {"error": _one_line(exc)}
    return result


def _one_line(exc):
    text = str(getattr(exc, "message", "") or exc) or type(exc).__name__
    return text.strip().splitlines()[-1][:1000] if text.strip() else type(exc).__name__


def main(argv):
    command = argv[0] if argv else ""
    try:
        if command == "build":
            from . import engine

            url, directory, cache = argv[1:4]
            digest, built = engine.build(url, directory, cache, offline="--offline" in argv)
            print(f"{'built' if built else 'up to date'} {digest}")
        elif command == "digests":
            print(json.dumps(digests(argv[1], argv[2], argv[3:])))
        elif command == "unpack":
            source, directory, digest = argv[1:4]
            unpack(sys.stdin.buffer if source == "-" else open(source, "rb"), directory, digest)
            print(f"unpacked {digest}")
        elif command == "pack":
            pack(argv[1], sys.stdout.buffer)
        else:
            print("usage: worker build URL DIR CACHE | digests ROOT CACHE URL... | "
                  "unpack - DIR DIGEST | pack DIR", file=sys.stderr)
            return 2
    except Exception as exc:        # one line for the node to report; details in the log
        print(f"{type(exc).__name__}: {exc}" if not hasattr(exc, "message") else str(exc),
              file=sys.stderr)
        return 1
    return 0


def unpack(stream, directory, digest):
    """Lay a cached build (a tar.gz read from ``stream``) out in ``directory``;
    ``.completed`` last."""
    from ..recipes import safe_extract
    from .engine import COMPLETED

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    completed = directory / COMPLETED
    if completed.exists() or completed.is_symlink():
        completed.unlink()
    with tarfile.open(fileobj=stream, mode="r|gz") as tar:
        safe_extract(tar, directory, skip=(COMPLETED,))
    completed.write_text(digest + "\n")


def pack(directory, out):
    """A tar.gz of a built release on ``out`` (its build log left out)."""
    import gzip

    from .engine import LOG

    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=3) as zipped, \
            tarfile.open(fileobj=zipped, mode="w|") as tar:
        for entry in sorted(Path(directory).iterdir()):
            if entry.name != LOG:
                tar.add(entry, arcname=entry.name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

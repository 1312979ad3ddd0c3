"""What the software user and the partition users must be able to reach.

Builds run as the software user and deployments as partition users, with the
interpreter slapnode is installed in: a virtualenv under /root (0700), or a
software root below a directory others cannot search, fails every build with
a bare PermissionError. ``problems`` says, before anything is changed, which
directory blocks what and what to do about it (``node register`` and ``node
format`` refuse such a config).
"""

import os
import stat
import sys
from pathlib import Path


def blocking_dir(path, lstat=os.stat):
    """The first directory on the way to ``path`` (itself excluded) that other
    users cannot search (no o+x), or None. ``lstat`` is injected for tests."""
    path = Path(path).absolute()
    for ancestor in reversed(path.parents):
        try:
            mode = lstat(ancestor).st_mode
        except FileNotFoundError:
            return None         # from here on, format creates it (0755)
        if not mode & stat.S_IXOTH:
            return ancestor, stat.S_IMODE(mode)
    return None


def interpreter_paths():
    """What an unprivileged user needs to run slapnode's worker: the interpreter,
    the virtualenv, and the slapnode package."""
    import slapnode

    return [Path(sys.executable), Path(os.path.realpath(sys.executable)), Path(sys.prefix),
            Path(slapnode.__file__).parent]


def problems(config, lstat=os.stat):
    found = []
    for what, path in (("software_root", config.software_root),
                       ("instance_root", config.instance_root)):
        blocked = blocking_dir(path, lstat)
        if blocked:
            found.append(f"{what} {path} cannot be reached by the software and partition users: "
                         f"{blocked[0]} is mode {blocked[1]:04o}; run `chmod o+x {blocked[0]}` "
                         f"or choose another {what}")
    for path in interpreter_paths():
        blocked = blocking_dir(path / "x" if path.is_dir() else path, lstat)
        if blocked:
            found.append(f"the software and partition users cannot run {sys.executable}: "
                         f"{blocked[0]} is mode {blocked[1]:04o}; install slapnode in a "
                         "virtualenv every user can reach (e.g. python3 -m venv "
                         "/opt/slapnode/venv), not under /root")
            break
    return found

"""Partition users, the software user, and their directories: the effects.

Owns the one security boundary of formatting on the user side: creating and
deleting Unix users and groups (``useradd``/``userdel``: the shadow suite is
the only safe writer of /etc/passwd and /etc/shadow, there is no library call
for it), and the partition directories (owner, 0750, skeleton). Only users
carrying our GECOS marker are ever deleted.
"""

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from ..errors import SlapnodeError
from .plan import SOFTWARE_MARK, UserInfo

NOLOGIN = "/usr/sbin/nologin"
SKELETON = ("etc", "etc/service", "etc/promise", "var", "var/log", "var/run", "srv", "tmp")


def all_users():
    return [UserInfo(p.pw_name, p.pw_uid, p.pw_gid, p.pw_gecos, p.pw_dir) for p in pwd.getpwall()]


def all_group_names():
    return {g.gr_name for g in grp.getgrall()}


def _run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise SlapnodeError(f"{cmd[0]} {cmd[-1]} failed: {message[-1] if message else result.returncode}")


def create_user(name, home, gecos):
    """A system user with its own group, no password (locked), no login shell."""
    _run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", str(home),
          "--shell", NOLOGIN, "--comment", gecos, name])
    entry = pwd.getpwnam(name)
    return UserInfo(name, entry.pw_uid, entry.pw_gid, entry.pw_gecos, entry.pw_dir)


def delete_user(name):
    """Delete one of our users and its group. Never called for a user without our marker."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        pass
    else:
        _run(["userdel", name])
    try:
        grp.getgrnam(name)
    except KeyError:
        return
    _run(["groupdel", name])


def user_processes(uid):
    """PIDs of processes running as ``uid`` (to refuse deleting a busy user)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def ensure_software_user(config):
    """The software user. The software root itself is root's (0755): each release's
    directory in it is the software user's, made by the agent through descriptors,
    so a build can never swap a release's directory for a link root would follow."""
    try:
        entry = pwd.getpwnam(config.software_user)
    except KeyError:
        create_user(config.software_user, config.software_root, SOFTWARE_MARK)
        entry = pwd.getpwnam(config.software_user)
    ensure_dir(config.software_root, 0, 0, 0o755)
    return entry


def ensure_dir(path, uid, gid, mode):
    """Make ``path`` a directory owned by uid:gid with ``mode``; fix it if it drifted."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    st = path.lstat()
    if path.is_symlink():
        raise SlapnodeError(f"{path} is a symbolic link; refusing to use it")
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(path, uid, gid, follow_symlinks=False)
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)


def ensure_partition_dir(spec, uid, gid):
    """The partition directory (0750) and its skeleton, owned by the partition user.
    The skeleton is made through descriptors: a link or a file the partition user
    put in its place is removed (never followed) and the directory made again."""
    from .. import safefs

    ensure_dir(spec.path, uid, gid, 0o750)
    for sub in SKELETON:
        parent, _, name = sub.rpartition("/")
        with safefs.opened_dir(spec.path, parent, uid=uid if parent else None) as fd:
            safefs.make_dir_at(fd, name, uid, gid, 0o755, fix_mode=False, replace=True)


def remove_tree(path):
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)

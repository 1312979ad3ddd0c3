"""Root's file operations in directories that someone else can write.

The one security boundary of the agent's file access (docs/security.md). A
partition's directory belongs to its user, a release's directory to the
software user; both are untrusted. Whatever root does there goes through
this module, which never follows a path they can change:

* directories are walked one component at a time from a trusted anchor
  (a directory whose parent only root can write) with ``O_NOFOLLOW``, so a
  symbolic link anywhere on the way is refused, not followed;
* files are opened ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO cannot block the
  reader), then checked on the open descriptor: a regular file, owned by
  the expected user (a hard link to somebody else's file is refused), no
  larger than the cap given;
* directories are made, chowned and chmodded through descriptors
  (``fchown``/``fchmod``), and trees are removed with ``shutil.rmtree``'s
  descriptor-based walk (``dir_fd=``), which never leaves the tree.
"""

import contextlib
import errno
import os
import shutil
import stat

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Refused(OSError):
    """A path root will not use: a link, not a regular file, foreign, or too large."""


def _parts(relpath):
    parts = [p for p in str(relpath).split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused(f"{relpath}: '..' is not allowed")
    return parts


@contextlib.contextmanager
def opened_dir(anchor, relpath="", uid=None):
    """A descriptor of ``anchor/relpath``, walked without following any link.

    ``anchor`` itself must be trusted (only root can replace it). With ``uid``,
    every directory below the anchor must belong to that user.
    """
    fd = _open_dir(anchor, relpath, uid)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_dir(anchor, relpath, uid=None):
    try:
        fd = os.open(anchor, DIR_FLAGS)
    except OSError as exc:
        raise _explain(exc, anchor) from None
    try:
        for part in _parts(relpath):
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _explain(exc, f"{anchor}/{relpath}") from None
            os.close(fd)
            fd = child
            if uid is not None and os.fstat(fd).st_uid != uid:
                raise Refused(f"{anchor}/{relpath}: not owned by uid {uid}")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _explain(exc, where):
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return Refused(f"{where}: a symbolic link or not a directory; refused")
    return exc


def read_at(dir_fd, name, cap, uid=None, where=None):
    """The bytes of regular file ``name`` in ``dir_fd`` (at most ``cap``).

    Refuses (``Refused``) links, FIFOs, devices, sockets, files of another
    owner than ``uid`` and files over ``cap`` bytes. ``FileNotFoundError``
    when it is not there.
    """
    where = where or name
    if "/" in name or name in ("", ".", ".."):
        raise Refused(f"{where}: not a plain file name")
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(f"{where}: a symbolic link; refused") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{where}: not a regular file; refused")
        if uid is not None and st.st_uid != uid:
            raise Refused(f"{where}: owned by uid {st.st_uid}, not {uid}; refused")
        if st.st_size > cap:
            raise Refused(f"{where}: {st.st_size} bytes, more than {cap}; refused")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(1 << 16, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:          # it grew while we read
                raise Refused(f"{where}: more than {cap} bytes; refused")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_file(anchor, relpath, cap, uid=None):
    """``read_at`` for ``anchor/relpath``, every directory on the way walked no-follow."""
    parent, _, name = str(relpath).rpartition("/")
    with opened_dir(anchor, parent) as dir_fd:
        return read_at(dir_fd, name, cap, uid, where=f"{anchor}/{relpath}")


def read_tail(anchor, relpath, size, uid=None):
    """The last ``size`` bytes of a regular file (a log), opened no-follow; '' if absent
    or refused."""
    parent, _, name = str(relpath).rpartition("/")
    try:
        with opened_dir(anchor, parent) as dir_fd:
            fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (uid is not None and st.st_uid != uid):
            return ""
        os.lseek(fd, max(0, st.st_size - size), os.SEEK_SET)
        return os.read(fd, size).decode("utf-8", "replace")
    finally:
        os.close(fd)


def write_at(dir_fd, name, data, uid, gid, mode=0o644):
    """Put ``data`` in ``name`` in ``dir_fd`` for uid:gid, atomically: a new file made
    there (``O_EXCL | O_NOFOLLOW``), chowned through its descriptor, renamed over
    ``name`` (which replaces a link itself, never what it points to). Unchanged
    content is not written again."""
    try:
        if read_at(dir_fd, name, len(data) + 1, uid) == data:
            return False
    except OSError:
        pass
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb", closefd=False) as stream:
            stream.write(data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.close(fd)
        fd = None
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    return True


def list_files(dir_fd):
    """Names in ``dir_fd`` that are regular files (lstat, so links are left out)."""
    names = []
    for name in sorted(os.listdir(dir_fd)):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            names.append(name)
    return names


def make_dir_at(dir_fd, name, uid, gid, mode, fix_mode=True, replace=False):
    """Directory ``name`` in ``dir_fd``, owned uid:gid with ``mode``, made or fixed
    through its own descriptor (``fix_mode=False``: an existing one keeps its mode).
    A link or a file in its place is refused, or with ``replace`` removed first
    (the link itself, never what it points to)."""
    if replace:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
    created = True
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        created = False
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _explain(exc, name) from None
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        if stat.S_IMODE(st.st_mode) != mode and (fix_mode or created):
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def make_dirs(anchor, relpath, uid, gid, mode):
    """Every directory of ``relpath`` under the trusted ``anchor``, each made or fixed
    to uid:gid and ``mode`` through descriptors."""
    fd = _open_dir(anchor, "")
    try:
        for part in _parts(relpath):
            make_dir_at(fd, part, uid, gid, mode)
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def remove_at(dir_fd, name):
    """Remove ``name`` in ``dir_fd`` whatever it is; a directory with everything in it,
    never following a link out of it. Absent is fine."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def empty_dir(anchor):
    """Remove everything inside the trusted directory ``anchor`` (not ``anchor`` itself)."""
    with opened_dir(anchor) as fd:
        for name in os.listdir(fd):
            remove_at(fd, name)


def remove_tree(parent, name):
    """Remove ``parent/name`` (``parent`` trusted) without following links."""
    with opened_dir(parent) as fd:
        remove_at(fd, name)

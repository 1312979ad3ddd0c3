"""ELF files of an unpacked package tree, made to run from where they are.

Owns relocation for the ``deb`` recipe: reading the few ELF header fields that
matter (the program interpreter, whether the file is dynamic) without running
anything, the plan of what to change (pure), and the changes themselves with
Debian's ``patchelf``: every program with an interpreter gets the tree's own
``ld-linux`` (when the tree has one), every dynamic file but the C library's own
gets a RUNPATH of the tree's library directories. The loader is never touched,
nothing relies on LD_LIBRARY_PATH (it would leak into every child, jobs
included), and ``verify`` asks the tree's loader where each library resolves:
one outside the tree fails the build. Also owns the tree's symbolic links: an
absolute one (a package's ``/etc/...`` as the package knows it) is made relative
to the tree, or removed when the tree lacks its target, so that the tree never
points at the host's files (and the binary cache can carry it).
"""

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import PurePosixPath

PT_DYNAMIC, PT_INTERP = 2, 3
ET_EXEC, ET_DYN = 2, 3
BATCH = 200                 # files per patchelf process


class RelocationError(Exception):
    """The tree cannot be made to run on its own; the message says which file and why."""


@dataclass(frozen=True)
class ElfInfo:
    interpreter: str        # "" for a library or a static program
    dynamic: bool


def read_info(path):
    """The ELF facts of ``path``, or None when it is not an ELF executable or library."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) \
                    or head[5] not in (1, 2):
                return None
            wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
            (kind,) = struct.unpack_from(order + "H", head, 16)
            if kind not in (ET_EXEC, ET_DYN):
                return None
            if wide:
                (phoff,) = struct.unpack_from(order + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            else:
                (phoff,) = struct.unpack_from(order + "I", head, 28)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
            if phnum > 4096 or phentsize < (56 if wide else 32):
                return None
            stream.seek(phoff)
            table = stream.read(phentsize * phnum)
            interpreter, dynamic = "", False
            for index in range(phnum):
                start = index * phentsize
                if start + phentsize > len(table):
                    return None
                (ptype,) = struct.unpack_from(order + "I", table, start)
                if ptype == PT_DYNAMIC:
                    dynamic = True
                elif ptype == PT_INTERP:
                    if wide:
                        offset, = struct.unpack_from(order + "Q", table, start + 8)
                        size, = struct.unpack_from(order + "Q", table, start + 32)
                    else:
                        offset, = struct.unpack_from(order + "I", table, start + 4)
                        size, = struct.unpack_from(order + "I", table, start + 16)
                    if size > 4096:
                        return None
                    stream.seek(offset)
                    interpreter = stream.read(size).split(b"\0", 1)[0].decode("ascii", "replace")
            return ElfInfo(interpreter, dynamic)
    except OSError:
        return None


def scan(root):
    """{path relative to ``root``: ElfInfo} for every regular ELF file in the tree."""
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                continue
            info = read_info(path)
            if info is not None:
                found[os.path.relpath(path, root)] = info
    return found


def resolve_inside(root, relative, limit=40):
    """``relative`` (a path in the tree, maybe absolute as the package knows it) with
    symbolic links followed as if ``root`` were ``/``: absolute targets stay inside the
    tree, never on the host. Returns the relative path, or None if it leads nowhere."""
    parts = list(PurePosixPath("/", relative).parts[1:])
    done = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > limit:
                return None
            target = PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                done = []
                parts = list(target.parts[1:]) + parts
            else:
                parts = list(target.parts) + parts
            continue
        if not os.path.lexists(candidate):
            return None
        done.append(part)
    return os.path.join(*done) if done else None


def library_dirs(root, arch):
    """The tree's library directories that exist, most specific first."""
    return [d for d in (f"usr/lib/{arch}", f"lib/{arch}", "usr/lib", "lib")
            if os.path.isdir(os.path.join(root, d)) and not os.path.islink(os.path.join(root, d))]


def plan(files, keep, loader=""):
    """What to change: (programs, libraries). ``files``: {relative path: ElfInfo};
    ``keep``: paths never changed (the C library's own files); ``loader``: the tree's
    loader (relative), never changed either. Pure.

    Programs (with an interpreter) get the RUNPATH and the tree's loader if it has
    one, libraries the RUNPATH. A static file has nothing to change."""
    programs, libraries = [], []
    for path, info in sorted(files.items()):
        if path in keep or path == loader or not info.dynamic:
            continue
        (programs if info.interpreter else libraries).append(path)
    return programs, libraries


def _patchelf(args, paths, root):
    tool = shutil.which("patchelf", path="/usr/bin:/bin:/usr/local/bin")
    if not tool:
        raise RelocationError("patchelf is missing (apt-get install patchelf)")
    for start in range(0, len(paths), BATCH):
        batch = [os.path.join(root, p) for p in paths[start:start + BATCH]]
        for path in batch:
            mode = os.stat(path).st_mode
            if not mode & 0o200:
                os.chmod(path, mode | 0o200)
        result = subprocess.run([tool, *args, *batch], capture_output=True, text=True)
        if result.returncode != 0:
            message = (result.stderr.strip().splitlines() or ["failed"])[-1]
            raise RelocationError(f"patchelf {' '.join(args[:1])}: {message}")


def relative_links(root):
    """Absolute symbolic links made relative inside the tree (their target resolved as if
    ``root`` were ``/``), or removed when the tree has no such target. Returns (rewritten,
    removed) as lists of relative paths."""
    root = os.path.abspath(root)
    rewritten, removed = [], []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                continue
            target = os.readlink(path)
            if not target.startswith("/"):
                continue
            relative = os.path.relpath(path, root)
            found = resolve_inside(root, target)
            os.unlink(path)
            if found is None:
                removed.append(relative)
                continue
            os.symlink(os.path.relpath(os.path.join(root, found), directory), path)
            rewritten.append(relative)
    return rewritten, removed


def find_loader(root, files):
    """The tree's own loader (relative path), or "" when the programs' interpreter is
    not in the tree (it is the host's)."""
    interpreters = {info.interpreter for info in files.values() if info.interpreter}
    for interpreter in sorted(interpreters):
        # /lib64/... lives in usr/lib64 when the packages assume a merged /usr (the
        # links /lib64 -> usr/lib64 belong to base-files, never unpacked here)
        found = resolve_inside(root, interpreter) or resolve_inside(root, "usr" + interpreter)
        if found and found in files:
            return found
    return ""


def relocate(root, arch, keep=()):
    """Make the tree's ELF files run from ``root`` as they are. Returns (programs,
    libraries, loader): the relative paths changed, and the absolute path of the tree's
    own loader ("" when it has none: the programs keep the host's)."""
    root = os.path.abspath(root)
    files = scan(root)
    loader = find_loader(root, files)
    programs, libraries = plan(files, set(keep), loader)
    runpath = ":".join(os.path.join(root, d) for d in library_dirs(root, arch))
    if programs:
        interpreter = ["--set-interpreter", os.path.join(root, loader)] if loader else []
        _patchelf([*interpreter, "--set-rpath", runpath], programs, root)
    if libraries:
        _patchelf(["--set-rpath", runpath], libraries, root)
    return programs, libraries, os.path.join(root, loader) if loader else ""


def host_loader(root, programs):
    """The interpreter the first of ``programs`` names (a host path), for ``verify``
    when the tree has no loader of its own."""
    for path in programs:
        info = read_info(os.path.join(root, path))
        if info and info.interpreter and os.path.exists(info.interpreter):
            return info.interpreter
    return "/lib64/ld-linux-x86-64.so.2"


def resolution(listing, root):
    """From an ``ld.so --list`` answer: (libraries resolved outside ``root`` as
    [(name, where)], names not found). Pure."""
    outside, missing = [], []
    prefix = root.rstrip("/") + "/"
    for line in listing.splitlines():
        line = line.strip()
        if "=>" not in line:
            continue
        name, _, rest = line.partition("=>")
        where = rest.strip().split(" (", 1)[0].strip()
        if where == "not found" or not where:
            missing.append(name.strip())
        elif not os.path.normpath(where).startswith(prefix):
            outside.append((name.strip(), where))
    return outside, missing


def verify(root, loader, paths, inside_only=True):
    """Ask ``loader`` how each of ``paths`` (relative) would load. With ``inside_only``
    (the tree has its own C library) a library from outside the tree fails: the host's
    copy would be loaded into the release's programs. {path: [missing names]} is
    returned for the files that cannot load at all (their libraries' packages were
    left out on purpose, e.g. Python bindings)."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C"}
    root = os.path.abspath(root)
    unloadable = {}
    for path in paths:
        result = subprocess.run([loader, "--list", os.path.join(root, path)],
                                capture_output=True, text=True, env=env)
        found, missing = resolution(result.stdout, root)
        if found and inside_only:
            name, where = found[0]
            raise RelocationError(f"{path} loads {name} from {where}, outside the release "
                                  f"({len(found)} such); add the package that holds it")
        if missing or result.returncode != 0:
            unloadable[path] = missing or [(result.stderr.strip().splitlines() or ["?"])[-1]]
    return unloadable

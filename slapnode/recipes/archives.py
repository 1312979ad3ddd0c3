"""``download`` (a checked file, optionally unpacked) and ``cmmi`` (configure, make,
make install from a source tarball)."""

import os
import shutil
import tarfile
import tempfile
import urllib.parse
import zipfile
from pathlib import Path

from . import Recipe, RecipeError, as_bool, lines, safe_extract


def _filename(get):
    return os.path.basename(urllib.parse.urlparse(get("url")).path) or "download"


def unpack(archive, destination, strip=True):
    """Unpack a tar or zip archive safely (no paths outside ``destination``)."""
    destination = Path(destination)
    tmp = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}-"))
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                safe_extract(tar, tmp)
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise RecipeError(f"{archive}: unsafe path {member!r} in the archive")
                zf.extractall(tmp)
        else:
            raise RecipeError(f"{archive}: not a tar or zip archive")
        entries = list(tmp.iterdir())
        root = entries[0] if strip and len(entries) == 1 and entries[0].is_dir() else tmp
        destination.mkdir(parents=True, exist_ok=True)
        for entry in root.iterdir():
            target = destination / entry.name
            if target.exists() or target.is_symlink():
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
            os.replace(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Download(Recipe):
    """``url`` with ``sha256`` or ``md5sum``; ``filename``; ``destination`` (default
    the part's location); ``unpack`` (true: extract the archive there,
    ``strip-top-level-dir`` default true). Sets ``target``: the file, or the directory."""

    computed = {
        "filename": _filename,
        "target": lambda get: _target(get),
    }

    def install(self):
        url = self.require("url")
        cached = self.context.download(url, self.options.get("sha256"), self.options.get("md5sum"))
        destination = Path(self.options.get("destination") or self.location)
        if as_bool(self.options.get("unpack")):
            unpack(cached, destination, as_bool(self.options.get("strip-top-level-dir"), True))
            return [str(destination)]
        destination.mkdir(parents=True, exist_ok=True)
        target = destination / (self.options.get("filename") or _filename(self.options.get))
        shutil.copyfile(cached, target)
        if self.options.get("mode"):
            os.chmod(target, int(self.options["mode"], 8))
        return [str(target)]


def _opt(get, name):
    from ..profile.parser import ProfileError

    try:
        return get(name)
    except ProfileError:
        return None


def _target(get):
    base = _opt(get, "destination") or get("location")
    if as_bool(_opt(get, "unpack")):
        return base
    return f"{base}/{_opt(get, 'filename') or _filename(get)}"


class Cmmi(Recipe):
    """configure / make / make install of ``url`` (checked by ``sha256``/``md5sum``)
    into the part's location. Options: ``configure-options``, ``environment``
    (KEY=VALUE lines), ``patches`` (one per line: a path or URL, ``#checksum``
    after a URL: 32 hex digits for md5, 64 for sha256; ``patch-options`` default -p1), ``make-options``, ``make-targets`` (default install),
    ``configure-command`` (default ./configure)."""

    def install(self):
        url = self.require("url")
        archive = self.context.download(url, self.options.get("sha256"), self.options.get("md5sum"))
        prefix = self.location
        work = Path(tempfile.mkdtemp(dir=self.context.parts_directory, prefix=f".build-{self.name}-"))
        try:
            source = work / "src"
            unpack(archive, source)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            for line in lines(self.options.get("environment")):
                key, sep, value = line.partition("=")
                if not sep:
                    raise RecipeError(f"[{self.name}] environment line {line!r}: expected KEY=VALUE")
                env[key.strip()] = value.strip()
            for patch in lines(self.options.get("patches")):
                location, _, checksum = patch.partition("#")
                path = self.context.download(location, sha256=checksum if len(checksum) == 64 else None,
                                             md5sum=checksum if len(checksum) == 32 else None)
                self.context.run(["patch", *self.options.get("patch-options", "-p1").split(),
                                  "-i", str(path)], cwd=source, what=f"[{self.name}] patch")
            configure = self.options.get("configure-command", "./configure").split()
            options = self.options.get("configure-options", "").split()
            self.context.run([*configure, f"--prefix={prefix}", *options], cwd=source, env=env,
                             what=f"[{self.name}] configure")
            make = ["make", *self.options.get("make-options", "").split()]
            self.context.run(make, cwd=source, env=env, what=f"[{self.name}] make")
            targets = self.options.get("make-targets", "install").split()
            self.context.run([*make, *targets], cwd=source, env=env,
                             what=f"[{self.name}] make {' '.join(targets)}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return [str(prefix)]

"""Recipes: the plugin interface, and what every recipe gets.

Owns how ``recipe = DIST:NAME`` finds its class (entry points group
``slapnode.recipes``: ``slapnode:download`` is the entry ``download`` of the
``slapnode`` distribution; a third party's ``other:thing`` is the entry
``thing`` of distribution ``other``), the base class with its install and
update paths, and the build context (directories, the shared download cache,
the log) that a recipe uses instead of reaching for globals.
"""

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..errors import SlapnodeError

GROUP = "slapnode.recipes"


class RecipeError(SlapnodeError):
    """A recipe failed; the message says which part and why, in one line."""


@functools.lru_cache(maxsize=None)
def _entry_points():
    """The installed recipes, read once per process (each scan reads every
    distribution's metadata: milliseconds that a deployment would pay per option)."""
    return tuple(metadata.entry_points(group=GROUP))


@functools.lru_cache(maxsize=None)
def find(spec):
    """The recipe class for ``DIST:NAME``."""
    dist, sep, name = spec.partition(":")
    if not sep or not dist or not name:
        raise RecipeError(f"recipe {spec!r} must be DISTRIBUTION:NAME, e.g. slapnode:download")
    try:        # that distribution's own metadata only: a deployment is not a scan of them all
        for entry in metadata.distribution(dist).entry_points:
            if entry.group == GROUP and entry.name == name:
                return entry.load()
    except metadata.PackageNotFoundError:
        pass
    for entry in _entry_points():
        if entry.name == name and entry.dist is not None and _norm(entry.dist.name) == _norm(dist):
            return entry.load()
    known = sorted(f"{_norm(e.dist.name) if e.dist else '?'}:{e.name}" for e in _entry_points())
    raise RecipeError(f"unknown recipe {spec!r}; installed recipes: {', '.join(known)}")


def _norm(name):
    return name.lower().replace("_", "-")


def computed_option(section, recipe, option, get, effects=False):
    """Profile hook: options a recipe derives from the others (see Recipe.computed).
    One that needs an effect (``Recipe.effectful``) is a stable placeholder in a
    pure expansion: a digest or a plan never writes anything."""
    try:
        cls = find(recipe)
    except RecipeError:
        return None
    derive = getattr(cls, "computed", {}).get(option)
    if derive is None:
        return None
    if option in getattr(cls, "effectful", ()) and not effects:
        return f"<{option} of [{section}], made when it is built>"
    return derive(get)


@dataclass
class Context:
    """What a recipe may use: where to build, the download cache, the log."""

    directory: Path                 # the software release's directory
    download_cache: Path
    log: object                     # a text stream
    offline: bool = False
    profile: object = None          # the expanded profile, for recipes that read other sections

    def slap_configuration(self):
        """The agent's [slap-configuration] when deploying an instance, else {}."""
        if self.profile is None or not self.profile.has_section("slap-configuration"):
            return {}
        return self.profile.section("slap-configuration")

    def instance_parameters(self):
        import json

        raw = self.slap_configuration().get("parameters")
        return json.loads(raw) if raw else {}

    def slap_parameter(self):
        """The [slap-parameter] section (defaults, with the request's values over them)."""
        if self.profile is None or not self.profile.has_section("slap-parameter"):
            return {}
        return self.profile.section("slap-parameter")

    def shared_instances(self):
        import json

        raw = self.slap_configuration().get("shared-instances")
        return json.loads(raw) if raw else []

    @property
    def parts_directory(self):
        return self.directory / "parts"

    def say(self, message):
        self.log.write(message.rstrip("\n") + "\n")
        self.log.flush()

    def run(self, cmd, cwd=None, env=None, shell=False, what=None):
        """Run a command with its output in the log; a failure names the command and
        says the last line it printed (where a script says what to do)."""
        shown = cmd if shell else " ".join(map(str, cmd))
        self.say(f"$ {shown}")
        full_env = dict(os.environ)
        full_env.update(env or {})
        last = ""
        with subprocess.Popen(cmd, cwd=cwd, env=full_env, shell=shell, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL) as process:
            for raw in process.stdout:
                self.log.write(raw.decode("utf-8", "replace"))
                if raw.strip():
                    last = raw.decode("utf-8", "replace").strip()
            self.log.flush()
        if process.returncode != 0:
            said = f" ({last[:300]})" if last else ""
            raise RecipeError(f"{what or 'command'} failed with exit code "
                              f"{process.returncode}{said}: {shown.splitlines()[0][:200] if shown else ''}")

    def read_text(self, url, sha256=None, md5sum=None):
        """A text file of the release itself (a template next to the profile).

        With a checksum it goes through the download cache; without one it is
        read afresh every time (its URL may keep its name and change content)."""
        if sha256 or md5sum:
            return Path(self.download(url, sha256, md5sum)).read_text(encoding="utf-8")
        source = _local_path(url)
        if source is not None:
            try:
                return Path(source).read_text(encoding="utf-8")
            except OSError as exc:
                raise RecipeError(f"cannot read {source}: {exc.strerror}") from None
        import io

        buffer = io.BytesIO()
        _http_download(url, buffer)
        return buffer.getvalue().decode("utf-8")

    def download(self, url, sha256=None, md5sum=None):
        """A local copy of ``url`` from the shared cache, checked against its checksum."""
        if not sha256 and not md5sum and "://" in url and not url.startswith("file://"):
            raise RecipeError(f"{url}: give sha256 (or md5sum) so the download can be checked")
        key = hashlib.sha256(url.encode()).hexdigest()
        cached = self.download_cache / key
        if cached.exists() and _matches(cached, sha256, md5sum):
            return cached
        source = _local_path(url)
        self.download_cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.download_cache, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                if source is not None:
                    with open(source, "rb") as stream:
                        shutil.copyfileobj(stream, out)
                else:
                    if self.offline:
                        raise RecipeError(f"{url}: not in the download cache and offline")
                    self.say(f"downloading {url}")
                    _http_download(url, out)
            if not _matches(Path(tmp), sha256, md5sum):
                raise RecipeError(f"{url}: checksum mismatch (expected "
                                  f"{'sha256 ' + sha256 if sha256 else 'md5 ' + md5sum}); "
                                  "the file changed or the checksum is wrong")
            os.replace(tmp, cached)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return cached


def _local_path(url):
    if url.startswith("file://"):
        return urllib.parse.urlparse(url).path
    if "://" not in url:
        return url
    return None


def _http_download(url, out):
    import requests

    host = urllib.parse.urlparse(url).hostname
    try:
        with requests.get(url, stream=True, timeout=60) as response:
            if response.status_code != 200:
                raise RecipeError(f"cannot download {url}: HTTP {response.status_code}")
            for chunk in response.iter_content(1 << 16):
                out.write(chunk)
    except requests.ConnectionError:
        raise RecipeError(f"cannot download {url}: {host} cannot be reached from this machine "
                          "(no route, or its name does not resolve)") from None
    except requests.Timeout:
        raise RecipeError(f"cannot download {url}: {host} did not answer in time") from None
    except requests.RequestException as exc:
        raise RecipeError(f"cannot download {url}: {type(exc).__name__}") from None


def _matches(path, sha256, md5sum):
    if sha256:
        return file_digest(path, "sha256") == sha256.lower()
    if md5sum:
        return file_digest(path, "md5") == md5sum.lower()
    return True


def file_digest(path, algorithm="sha256"):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _archive_path(name):
    """A member's path inside the archive, normalised; None when it would leave it."""
    if name.startswith("/") or "\\" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return "/".join(parts)


def _link_target(member_name, target):
    """Where a symbolic link member points, inside the archive; None if outside."""
    if target.startswith("/"):
        return None
    parts = member_name.split("/")[:-1]
    for piece in target.split("/"):
        if piece in ("", "."):
            continue
        if piece == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(piece)
    return "/".join(parts)


def safe_extract(tar, destination, skip=()):
    """Extract a tarfile member by member (also from a stream), refusing anything that
    would write outside ``destination``: absolute paths and '..'; symbolic links
    pointing outside it; any member whose path goes through a symbolic link (one
    from the archive or one already on disk); hard links to outside or through a
    link; devices and FIFOs. Setuid and setgid bits are cleared. (Python 3.11.2 on
    Debian 12 has no ``extractall(filter=...)`` yet.)"""
    root = os.path.realpath(destination)
    links = set()

    def through_link(path):
        parts = path.split("/")
        for i in range(1, len(parts)):
            ancestor = "/".join(parts[:i])
            if ancestor in links or os.path.islink(os.path.join(root, ancestor)):
                return True
        return False

    for member in tar:
        name = _archive_path(member.name)
        if name is None:
            raise RecipeError(f"unsafe path {member.name!r} in the archive")
        if not name or name in skip:
            continue
        if member.isdev() or member.isfifo():
            raise RecipeError(f"device or FIFO {member.name!r} in the archive")
        if through_link(name):
            raise RecipeError(f"{member.name!r} in the archive goes through a symbolic link")
        if member.issym():
            if _link_target(name, member.linkname) is None:
                raise RecipeError(f"symbolic link {member.name!r} points outside the archive "
                                  f"({member.linkname!r})")
            links.add(name)
        elif member.islnk():
            target = _archive_path(member.linkname)
            if not target or through_link(target) or target in links:
                raise RecipeError(f"hard link {member.name!r} points outside the archive "
                                  "or through a symbolic link")
            member.linkname = target
        member.name = name
        member.mode &= 0o1777           # no setuid/setgid
        path = os.path.join(root, name)
        if os.path.islink(path) or (os.path.lexists(path) and not member.isdir()
                                    and not os.path.isdir(path)):
            os.unlink(path)             # never write through what is already there
        tar.extract(member, root, set_attrs=not member.issym())


def as_bool(text, default=False):
    if text is None or text == "":
        return default
    return text.strip().lower() in ("true", "yes", "1", "on")


def lines(text):
    return [l.strip() for l in (text or "").splitlines() if l.strip()]


class Recipe:
    """Base class. ``options`` are the part's expanded options (strings).

    ``install()`` creates what the part makes and returns the paths it made;
    ``update()`` runs when the part's options did not change since it was
    installed (default: nothing to do). A recipe writes only inside its
    ``location`` and the paths it returns.
    """

    computed = {}       # option -> function(get) for options derived from others
    effectful = frozenset()     # computed options that act (write a file): only in builds
    given = frozenset()         # options whose value carries text the agent gave

    def __init__(self, context, name, options):
        self.context = context
        self.name = name
        self.options = options

    @property
    def location(self):
        return Path(self.options.get("location") or self.context.parts_directory / self.name)

    def require(self, option):
        value = self.options.get(option, "").strip()
        if not value:
            raise RecipeError(f"[{self.name}] needs option {option!r}")
        return value

    def install(self):
        raise NotImplementedError

    def update(self):
        return []

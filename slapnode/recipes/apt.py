"""A private apt state for another suite of the Debian archive the node already uses.

Owns the ``deb`` recipe's view of other suites: which archive and keyring the
system's own sources name (parsed, pure), the sources list and the lists
directory kept under the download cache (one per suite, shared by every build of
the node and guarded by a lock), when they are refreshed, and the ``-o`` options
that make ``apt-get``/``apt-cache`` read that state instead of the system's. The
system's apt configuration, lists and status are never written, and no root is
needed: the build runs as the software user.
"""

import fcntl
import functools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

SUITE_RE = re.compile(r"^[a-z][a-z0-9.+-]{0,39}$")
MAX_AGE = 24 * 3600             # lists older than this are fetched again
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class AptError(Exception):
    """The other suite cannot be used here; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple
    components: tuple
    signed_by: str = ""


def parse_sources(text, deb822):
    """The ``deb`` (binary) sources of one file: a one-line ``sources.list`` or a
    deb822 ``.sources`` file. Pure."""
    found = []
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields, key = {}, None
            for line in stanza.splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if line[0] in " \t" and key:
                    fields[key] += " " + line.strip()
                    continue
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                found.append(Source(uri.rstrip("/"), tuple(fields.get("suites", "").split()),
                                    tuple(fields.get("components", "").split()),
                                    fields.get("signed-by", "")))
        return found
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        options = {}
        if words and words[0].startswith("["):
            bracket = []
            while words:
                word = words.pop(0)
                bracket.append(word)
                if word.endswith("]"):
                    break
            for item in " ".join(bracket).strip("[]").split():
                key, _, value = item.partition("=")
                options[key] = value
        if len(words) >= 2:
            found.append(Source(words[0].rstrip("/"), (words[1],), tuple(words[2:]),
                                options.get("signed-by", "")))
    return found


def archive_for(sources, codename):
    """(uri, keyring) of the archive that serves the system's own suite ``codename``
    with ``main``: the other suite is taken from the same archive. Pure."""
    for source in sources:
        if codename in source.suites and "main" in source.components:
            return source.uri, source.signed_by
    raise AptError(f"no apt source serves {codename} main (looked in /etc/apt/sources.list "
                   "and /etc/apt/sources.list.d); add the Debian archive there")


def system_sources(etc="/etc/apt"):
    found = []
    top = Path(etc) / "sources.list"
    if top.is_file():
        found += parse_sources(top.read_text(errors="replace"), deb822=False)
    parts = Path(etc) / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix in (".list", ".sources") and path.is_file():
                found += parse_sources(path.read_text(errors="replace"), path.suffix == ".sources")
    return found


@functools.lru_cache(maxsize=None)
def system_codename(os_release="/etc/os-release"):
    try:
        for line in Path(os_release).read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def sources_line(uri, suite, keyring):
    """The private sources list (one line). Pure."""
    return f"deb [signed-by={keyring}] {uri} {suite} main\n"


def options(state):
    """The apt options that use the private ``state`` directory. Pure."""
    state = str(state)
    return ["-o", f"Dir::Etc::sourcelist={state}/sources.list", "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::Etc::preferencesparts={state}/preferences.d",
            "-o", f"Dir::State::Lists={state}/lists", "-o", f"Dir::Cache={state}/cache",
            "-o", "Dir::State::status=/dev/null", "-o", "Debug::NoLocking=1",
            "-o", "Acquire::Languages=none", "-o", "APT::Get::List-Cleanup=0"]


def stale(state, now, max_age=MAX_AGE):
    """Whether the lists need ``apt-get update``: none yet, or the last successful
    update is older than ``max_age``. Effects: stat only."""
    lists = Path(state) / "lists"
    if not (lists.is_dir() and any(lists.glob("*_Packages*"))):
        return True
    try:
        return now - (Path(state) / ".updated").stat().st_mtime > max_age
    except FileNotFoundError:
        return True


class SuiteState:
    """The private apt state of ``suite`` under ``cache`` (the download cache)."""

    def __init__(self, cache, suite):
        if not SUITE_RE.match(suite):
            raise AptError(f"suite {suite!r} is not a Debian suite name (e.g. trixie)")
        self.suite = suite
        self.directory = Path(cache) / "apt" / suite

    @property
    def options(self):
        return options(self.directory)

    def _has_lists(self):
        return any((self.directory / "lists").glob("*_Packages*"))

    def ensure(self, run, say, offline=False):
        """Write the sources list and bring the lists up to date (``run`` runs a command
        with its output in the build log, ``say`` logs), one build at a time. Lists a
        failed refresh leaves behind are used, saying so."""
        uri, keyring = archive_for(system_sources(), system_codename())
        keyring = keyring if keyring.startswith("/") else DEFAULT_KEYRING
        for sub in ("lists/partial", "cache/archives/partial", "preferences.d"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            line = sources_line(uri, self.suite, keyring)
            listing = self.directory / "sources.list"
            changed = not listing.exists() or listing.read_text() != line
            if changed:
                tmp = listing.with_suffix(".tmp")
                tmp.write_text(line)
                os.replace(tmp, listing)
                (self.directory / ".updated").unlink(missing_ok=True)
            if not stale(self.directory, time.time()):
                return
            if offline:
                if self._has_lists():
                    return
                raise AptError(f"the package lists of {self.suite} are not in the download "
                               "cache and the build is offline")
            try:
                run(["apt-get", "update", "-q", "--error-on=any", *self.options],
                    what=f"apt-get update of {self.suite} from {uri}")
            except Exception as exc:
                if not self._has_lists():
                    raise AptError(f"{exc} (is {uri} reachable from here, and {self.suite} "
                                   "a suite of it?)") from None
                say(f"{exc}; using the lists of {self.suite} already here")
                return
            if not self._has_lists():
                raise AptError(f"apt-get update found no packages for {self.suite} at {uri} "
                               "(is it reachable from here, and a suite of that archive?)")
            (self.directory / ".updated").touch()

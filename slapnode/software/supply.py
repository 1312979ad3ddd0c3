"""The node's software pass: build what is supplied, remove what is destroyed.

Owns the decisions (``plan``: pure) and their execution: for every release in
the desired state, skip it when its directory is complete for the current
profile, fetch it from the master's binary cache when a trusted builder put
it there, else build it as the software user (never root) with bounded
parallelism; retry failed builds with backoff; remove a release supplied as
destroyed once no partition uses it; report building / available / error
(with the tail of the log) to the master.
"""

import concurrent.futures
import hashlib
import json
import os
import platform
import pwd
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import machine
from ..errors import MasterError, SlapnodeError
from . import engine, software_dir, worker

PARALLEL_BUILDS = 2
BACKOFF_FIRST = 30.0            # seconds; doubles per failure
BACKOFF_MAX = 3600.0
LOG_TAIL = 4000


@dataclass
class Result:
    url: str
    status: str             # available | error | destroyed | waiting | building
    how: str = ""           # built | cache | up to date | removed | backoff
    seconds: float = 0.0
    log_tail: str = ""


def platform_id():
    return f"{platform.machine()}/{machine.distribution()}"


def cache_key(url, digest, software_root):
    """What a cached build must match: the release, its expanded profile, the
    platform and the software root (builds embed absolute paths)."""
    blob = "\n".join([url, digest, platform_id(), str(Path(software_root).resolve())])
    return hashlib.sha256(blob.encode()).hexdigest()


def plan(doc):
    """(to_build, to_remove): pure, from the desired-state document."""
    in_use = {p["instance"]["software"] for p in doc.get("partitions", []) if p.get("instance")}
    to_build = [s["url"] for s in doc.get("software", []) if s["state"] == "available"]
    to_remove = [s["url"] for s in doc.get("software", [])
                 if s["state"] == "destroyed" and s["url"] not in in_use]
    return to_build, to_remove


class Backoff:
    """Failed builds wait before the next try: 30 s, 60 s, … up to an hour."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.state = {}

    def waiting(self, url, now=None):
        entry = self.state.get(url)
        return bool(entry) and (now or time.time()) < entry["next"]

    def failed(self, url, now=None):
        entry = self.state.get(url, {"failures": 0})
        failures = entry["failures"] + 1
        delay = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)
        self.state[url] = {"failures": failures, "next": (now or time.time()) + delay}

    def succeeded(self, url):
        self.state.pop(url, None)

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)


def _tail(path):
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - LOG_TAIL))
            return stream.read().decode("utf-8", "replace")
    except OSError:
        return ""


class SoftwareUser:
    """Runs the build worker as the software user."""

    def __init__(self, name):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise SlapnodeError(f"the software user {name!r} does not exist; run "
                                "`slapnode node format` first") from None
        self.name, self.uid, self.gid, self.home = name, entry.pw_uid, entry.pw_gid, entry.pw_dir

    def run(self, *args):
        return worker.run_as(self.uid, self.gid, self.home, args)

    def own(self, path):
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)


class SoftwarePass:
    def __init__(self, config, client=None, say=None, parallel=PARALLEL_BUILDS, offline=False):
        self.config = config
        self.client = client
        self.say = say or (lambda message: None)
        self.parallel = parallel
        self.offline = offline
        self.root = Path(config.software_root)
        self.cache_dir = self.root / engine.DOWNLOAD_CACHE
        self.backoff = Backoff(Path(config.state_dir) / "software-backoff.json")

    # -- one release ------------------------------------------------------------------
    def ensure(self, url, trusted=False, force=False):
        directory = software_dir(self.root, url)
        started = time.monotonic()
        try:
            profile = engine.load_profile(url, directory, self.cache_dir)
            digest = profile.digest()           # refuses a profile that does not parse
        except SlapnodeError as exc:
            return Result(url, "error", "profile", time.monotonic() - started, str(exc))
        if engine.completed_digest(directory) == digest:
            return Result(url, "available", "up to date", time.monotonic() - started)
        if not force and self.backoff.waiting(url):
            return Result(url, "waiting", "backoff", 0.0)
        self._report(url, "building")
        user = SoftwareUser(self.config.software_user)
        self._prepare(directory, user)
        key = cache_key(url, digest, self.root)
        how = "cache" if self._from_cache(key, directory, digest, user) else "built"
        if how == "built":
            self.say(f"building {url}")
            args = ["build", url, directory, self.cache_dir] + (["--offline"] if self.offline else [])
            result = user.run(*args)
            if result.returncode != 0:
                self.backoff.failed(url)
                reason = (result.stderr.strip().splitlines() or ["build failed"])[-1]
                tail = _tail(directory / engine.LOG) or result.stderr[-LOG_TAIL:]
                return Result(url, "error", reason, time.monotonic() - started, tail)
            if trusted:
                self._upload(key, url, directory, digest)
        self.backoff.succeeded(url)
        return Result(url, "available", how, time.monotonic() - started,
                      _tail(directory / engine.LOG))

    def _prepare(self, directory, user):
        for path in (self.root, self.cache_dir, directory):
            Path(path).mkdir(parents=True, exist_ok=True)
        for path in (self.cache_dir, directory):
            user.own(path)

    def _from_cache(self, key, directory, digest, user):
        if self.client is None:
            return False
        try:
            entry = self.client.cache_lookup(key)
        except MasterError:
            return False
        if entry is None:
            return False
        fd, archive = tempfile.mkstemp(dir=self.cache_dir, prefix=".cache-", suffix=".tar.gz")
        os.close(fd)
        try:
            self.client.cache_download(key, archive)
            if engine_digest(archive) != entry["digest"]:
                self.say(f"cache archive for {key[:12]} does not match its digest: building instead")
                return False
            user.own(archive)
            result = user.run("unpack", archive, directory, digest)
            return result.returncode == 0
        except MasterError:
            return False
        finally:
            os.unlink(archive)

    def _upload(self, key, url, directory, digest):
        if self.client is None:
            return
        fd, archive = tempfile.mkstemp(prefix=".upload-", suffix=".tar.gz")
        os.close(fd)
        try:
            with tarfile.open(archive, "w:gz", compresslevel=3) as tar:
                for entry in sorted(Path(directory).iterdir()):
                    if entry.name not in (engine.LOG,):
                        tar.add(entry, arcname=entry.name)
            self.client.cache_upload(key, archive, engine_digest(archive), url, platform_id())
            self.say(f"uploaded {url} to the binary cache")
        except MasterError as exc:
            self.say(f"binary cache upload refused: {exc}")
        finally:
            os.unlink(archive)

    def remove(self, url):
        directory = software_dir(self.root, url)
        if directory.exists():
            shutil.rmtree(directory)
        self.backoff.succeeded(url)
        return Result(url, "destroyed", "removed")

    # -- the pass ---------------------------------------------------------------------
    def _report(self, url, status, log_tail=None):
        if self.client is None:
            return
        try:
            self.client.report(software=[{"url": url, "status": status, "log_tail": log_tail}])
        except MasterError:
            pass        # the next pass reports again

    def run(self, doc, force=False):
        to_build, to_remove = plan(doc)
        trusted = bool(doc.get("trusted_builder"))
        known = {s["url"]: s.get("status") for s in doc.get("software", [])}
        results = []
        with concurrent.futures.ThreadPoolExecutor(max(1, self.parallel)) as pool:
            futures = [pool.submit(self.ensure, url, trusted, force) for url in to_build]
            for future in concurrent.futures.as_completed(futures):
                result = future.result()
                results.append(result)
                if result.status in ("available", "error") and \
                        (result.how != "up to date" or known.get(result.url) != result.status):
                    self._report(result.url, result.status, result.log_tail)
                self.say(f"{result.url}: {result.status} ({result.how}, {result.seconds:.2f} s)")
        for url in to_remove:
            result = self.remove(url)
            results.append(result)
            self._report(url, "destroyed")
            self.say(f"{url}: removed")
        self.backoff.save()
        return results


def engine_digest(path):
    from ..recipes import file_digest

    return file_digest(path, "sha256")

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
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import machine, safefs
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
    """Failed builds wait before the next try: 30 s, 60 s, … up to an hour. The
    one-line reason of the last failure is kept, for the instances that wait."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.state = {}

    def waiting(self, url, now=None):
        entry = self.state.get(url)
        return bool(entry) and (now or time.time()) < entry["next"]

    def failure(self, url):
        """(reason, time of the next try) of a release whose last build failed, or None."""
        entry = self.state.get(url)
        if not entry:
            return None
        return entry.get("reason") or "the build failed", entry["next"]

    def failed(self, url, reason="", now=None):
        entry = self.state.get(url, {"failures": 0})
        failures = entry["failures"] + 1
        delay = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)
        self.state[url] = {"failures": failures, "next": (now or time.time()) + delay,
                           "reason": reason[:500]}

    def succeeded(self, url):
        self.state.pop(url, None)

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)


SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"


def ca_env(config):
    """With a pinned master CA, builds trust it as well as the system's authorities (they
    fetch profiles from the master and sources from anywhere): a bundle of both, readable
    by the software user, named by REQUESTS_CA_BUNDLE and SSL_CERT_FILE."""
    if not getattr(config, "ca_file", ""):
        return {}
    bundle = Path(config.software_root) / ".ca-bundle.pem"
    try:
        system = Path(SYSTEM_CAS).read_bytes() if Path(SYSTEM_CAS).exists() else b""
        text = system + b"\n" + Path(config.ca_file).read_bytes()
        if not bundle.exists() or bundle.read_bytes() != text:
            tmp = bundle.with_name(bundle.name + ".tmp")
            tmp.write_bytes(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, bundle)
    except OSError:
        return {}
    return {"REQUESTS_CA_BUNDLE": str(bundle), "SSL_CERT_FILE": str(bundle)}


class SoftwareUser:
    """Runs the build worker as the software user."""

    def __init__(self, name, cancel=None, config=None):
        self.cancel = cancel
        self.env = ca_env(config) if config is not None else {}
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise SlapnodeError(f"the software user {name!r} does not exist; run "
                                "`slapnode node format` first") from None
        self.name, self.uid, self.gid, self.home = name, entry.pw_uid, entry.pw_gid, entry.pw_dir

    def run(self, *args, **streams):
        if not streams:
            streams = {"cancel": self.cancel}
        return worker.run_as(self.uid, self.gid, self.home, args, extra_env=self.env, **streams)

    def make_dirs(self, software_root, *names):
        """``software_root/<name>`` for each name, the software user's, made through
        descriptors (a link the software user left there is refused, not followed)."""
        owner = (self.uid, self.gid) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
        Path(software_root).mkdir(parents=True, exist_ok=True)
        with safefs.opened_dir(software_root) as fd:
            for name in names:
                safefs.make_dir_at(fd, name, *owner, 0o755)

    def digests(self, software_root, cache, urls):
        """{url: digest | SlapnodeError}: each profile expanded by the software user."""
        if not urls:
            return {}
        result = self.run("digests", software_root, cache, *urls)
        if result.returncode != 0 or result.truncated:
            raise SlapnodeError(f"cannot expand the profiles: {result.last_error_line()}")
        try:
            answer = json.loads(result.stdout)
        except ValueError:
            raise SlapnodeError("cannot expand the profiles: the worker's answer is not JSON") from None
        return {url: (SlapnodeError(str(entry.get("error"))[:1000]) if "error" in entry
                      else str(entry.get("digest"))[:64])
                for url, entry in answer.items() if url in urls and isinstance(entry, dict)}


def _private_tmp(config):
    """A directory only root reads: downloaded archives wait here."""
    path = Path(config.state_dir) / "tmp"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


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
        self.said = {}
        self.stopping = threading.Event()       # set: builds in flight are stopped

    def stop(self):
        """Stop the builds in flight (they resume where they were at the next pass)."""
        self.stopping.set()

    def failure(self, url):
        return self.backoff.failure(url)

    # -- one release ------------------------------------------------------------------
    def ensure(self, url, trusted=False, force=False, digest=None):
        """Make the release at ``url`` available. ``digest``: its expanded profile's
        digest (or the SlapnodeError its expansion raised), computed by the software
        user; computed here when not given."""
        directory = software_dir(self.root, url)
        started = time.monotonic()
        if self.stopping.is_set():      # queued behind builds the agent's stop interrupted
            return Result(url, "waiting", "not started: the agent is stopping", 0.0)
        if not force and self.backoff.waiting(url):
            return Result(url, "waiting", "backoff", 0.0)
        try:
            user = SoftwareUser(self.config.software_user, self.stopping, self.config)
            user.make_dirs(self.root, engine.DOWNLOAD_CACHE, directory.name)
            if digest is None:
                digest = user.digests(self.root, self.cache_dir, [url]).get(url)
            if isinstance(digest, SlapnodeError) or digest is None:
                raise digest or SlapnodeError("the profile could not be expanded")
        except (SlapnodeError, OSError) as exc:
            if self.stopping.is_set():
                return Result(url, "waiting", "stopped", time.monotonic() - started)
            self.backoff.failed(url, str(exc))
            return Result(url, "error", "profile", time.monotonic() - started, str(exc))
        if engine.completed_digest(directory) == digest:
            self.backoff.succeeded(url)
            return Result(url, "available", "up to date", time.monotonic() - started)
        self._report(url, "building")
        key = cache_key(url, digest, self.root)
        how = "cache" if self._from_cache(key, directory, digest, user) else "built"
        if how == "built":
            self.say(f"building {url}")
            args = ["build", url, directory, self.cache_dir] + (["--offline"] if self.offline else [])
            try:
                result = user.run(*args)
            except SlapnodeError as exc:
                self.backoff.failed(url, str(exc))
                return Result(url, "error", str(exc), time.monotonic() - started, str(exc))
            if self.stopping.is_set():
                return Result(url, "waiting", "stopped", time.monotonic() - started)
            if result.returncode != 0:
                reason = result.last_error_line("build failed")
                self.backoff.failed(url, reason)
                tail = self._log_tail(directory) or result.stderr.decode("utf-8", "replace")[-LOG_TAIL:]
                return Result(url, "error", reason, time.monotonic() - started, tail)
            if trusted:
                self._upload(key, url, directory, digest, user)
        self.backoff.succeeded(url)
        return Result(url, "available", how, time.monotonic() - started, self._log_tail(directory))

    def _log_tail(self, directory):
        return safefs.read_tail(self.root, f"{directory.name}/{engine.LOG}", LOG_TAIL)

    def _from_cache(self, key, directory, digest, user):
        if self.client is None:
            return False
        try:
            entry = self.client.cache_lookup(key)
        except MasterError:
            return False
        if entry is None:
            return False
        fd, archive = tempfile.mkstemp(dir=_private_tmp(self.config), prefix="cache-",
                                       suffix=".tar.gz")
        os.close(fd)
        try:
            self.client.cache_download(key, archive)
            if engine_digest(archive) != entry["digest"]:
                self.say(f"cache archive for {key[:12]} does not match its digest: building instead")
                return False
            with open(archive, "rb") as stream:       # the software user reads it on a pipe
                result = user.run("unpack", "-", directory, digest, stdin=stream)
            if result.returncode != 0:
                self.say(f"cache archive for {key[:12]} refused ({result.last_error_line()}): "
                         "building instead")
            return result.returncode == 0
        except MasterError:
            return False
        finally:
            os.unlink(archive)

    def _upload(self, key, url, directory, digest, user):
        if self.client is None:
            return
        fd, archive = tempfile.mkstemp(dir=_private_tmp(self.config), prefix="upload-",
                                       suffix=".tar.gz")
        try:
            with os.fdopen(fd, "wb") as out:    # packed by the software user, on a pipe
                result = user.run("pack", directory, stdout=out)
            if result.returncode != 0:
                self.say(f"binary cache upload skipped: {result.last_error_line()}")
                return
            self.client.cache_upload(key, archive, engine_digest(archive), url, platform_id())
            self.say(f"uploaded {url} to the binary cache")
        except MasterError as exc:
            self.say(f"binary cache upload refused: {exc}")
        finally:
            os.unlink(archive)

    def remove(self, url):
        directory = software_dir(self.root, url)
        if self.root.is_dir():
            safefs.remove_tree(self.root, directory.name)
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

    def _digests(self, urls, force):
        """Digests of the releases that may be tried now, in one worker run."""
        ready = [u for u in urls if force or not self.backoff.waiting(u)]
        if not ready:
            return {}
        try:
            user = SoftwareUser(self.config.software_user, self.stopping, self.config)
            user.make_dirs(self.root, engine.DOWNLOAD_CACHE)
            return user.digests(self.root, self.cache_dir, ready)
        except (SlapnodeError, OSError) as exc:
            return {url: SlapnodeError(str(exc)) for url in ready}

    def run(self, doc, force=False):
        to_build, to_remove = plan(doc)
        trusted = bool(doc.get("trusted_builder"))
        known = {s["url"]: s.get("status") for s in doc.get("software", [])}
        digests = self._digests(to_build, force)
        results = []
        with concurrent.futures.ThreadPoolExecutor(max(1, self.parallel)) as pool:
            futures = [pool.submit(self.ensure, url, trusted, force, digests.get(url))
                       for url in to_build]
            for future in concurrent.futures.as_completed(futures):
                result = future.result()
                results.append(result)
                if result.status in ("available", "error") and \
                        (result.how != "up to date" or known.get(result.url) != result.status):
                    self._report(result.url, result.status, result.log_tail)
                line = f"{result.url}: {result.status} ({result.how})"
                if self.said.get(result.url) != line:       # only news is said
                    self.say(f"{line} [{result.seconds:.2f} s]")
                self.said[result.url] = line
        for url in [] if self.stopping.is_set() else to_remove:
            result = self.remove(url)
            results.append(result)
            self._report(url, "destroyed")
            self.say(f"{url}: removed")
        self.backoff.save()
        return results


def engine_digest(path):
    from ..recipes import file_digest

    return file_digest(path, "sha256")

"""Promises: the health checks an instance declares, and running them.

A promise is ``etc/promise/<name>.json`` in the partition (written by the
``promise`` recipe): a TCP port that must accept connections, an HTTP(S) URL
that must answer below 400, or a command that must exit 0, each within its
timeout. Promises are partition code: they are read and run *inside* the
partition (its container, as its user; ``slapnode.deploy.inside``), never by
the root agent, so that they reach only what the partition itself reaches.
The agent keeps their results and decides which are due (``due``, pure).
"""

import concurrent.futures
import math
import socket
import subprocess
import urllib.parse

MAX_DECLARATION = 64 << 10
MAX_PROMISES = 100
MAX_TIMEOUT = 60.0
DEFAULT_INTERVAL = 60.0
MIN_INTERVAL = 1.0


def _number(value, default, low, high):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    if not math.isfinite(number):
        return default
    return min(max(number, low), high)


def declared(root):
    """The partition's promise declarations (read by the partition user; a link, a
    FIFO or an oversized file counts as an unreadable declaration)."""
    from .inside import json_files

    result = []
    for name, spec in list(json_files(root, "etc/promise", MAX_DECLARATION))[:MAX_PROMISES]:
        if not isinstance(spec, dict):
            spec = {"type": "invalid", "target": f"etc/promise/{name}"}
        spec["name"] = name[:-len(".json")]
        result.append(spec)
    return result


def _tcp(target, timeout):
    host, _, port = target.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        return f"{target} accepts connections"


def _http(target, timeout):
    import http.client

    url = urllib.parse.urlsplit(target)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise OSError("only http:// and https:// URLs can be checked")
    kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    connection = kind(url.hostname, url.port, timeout=timeout)
    try:
        connection.request("GET", (url.path or "/") + (f"?{url.query}" if url.query else ""),
                           headers={"User-Agent": "slapnode-promise", "Connection": "close"})
        status = connection.getresponse().status
    finally:
        connection.close()
    if status >= 400:
        raise OSError(f"HTTP {status}")
    return f"HTTP {status}"


def _command(target, timeout, cwd):
    result = subprocess.run(["/bin/sh", "-c", target], capture_output=True, text=True,
                            timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL,
                            errors="replace")
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()
        raise OSError(f"exit code {result.returncode}" + (f": {tail[-1]}" if tail else ""))
    return "ok"


def run(promise, cwd=None):
    """{"name", "ok", "message", "interval"} for one promise, run as whoever we are."""
    name, kind = promise.get("name"), promise.get("type")
    target = str(promise.get("target", ""))
    timeout = _number(promise.get("timeout"), 5.0, 0.1, MAX_TIMEOUT)
    interval = _number(promise.get("interval"), DEFAULT_INTERVAL, MIN_INTERVAL, 86400.0)
    try:
        if kind == "tcp":
            message = _tcp(target, timeout)
        elif kind == "http":
            message = _http(target, timeout)
        elif kind == "command":
            message = _command(target, timeout, cwd)
        else:
            raise OSError(f"unreadable promise declaration {target}")
        ok = True
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        ok, message = False, f"{kind} {target}: {exc}"
    return {"name": name, "ok": ok, "message": message[:500], "interval": interval}


def run_all(root, names=None):
    """Run the declared promises (only ``names`` if given), at the same time."""
    chosen = [p for p in declared(root) if names is None or p["name"] in names]
    if not chosen:
        return []
    if len(chosen) == 1:            # no thread for one (a deployment's watch asks often)
        return [run(chosen[0], cwd=str(root))]
    with concurrent.futures.ThreadPoolExecutor(min(len(chosen), 16)) as pool:
        return list(pool.map(lambda p: run(p, cwd=str(root)), chosen))


def due(kept, now):
    """Names of kept results that must run again: failing, or past their interval.
    ``kept``: {name: {"ok", "at", "interval", ...}}. Pure."""
    return sorted(name for name, result in kept.items()
                  if not result.get("ok") or now - result.get("at", 0) >= result.get("interval", 0))

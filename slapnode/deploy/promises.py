"""Promises: the health checks an instance declares, and running them.

A promise is ``etc/promise/<name>.json`` in the partition (written by the
``promise`` recipe): a TCP port that must accept connections, an HTTP URL
that must answer below 400, or a command (run as the partition user) that
must exit 0, each within its timeout.
"""

import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path


def declared(root):
    result = []
    for path in sorted((Path(root) / "etc" / "promise").glob("*.json")):
        try:
            result.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            result.append({"name": path.stem, "type": "invalid", "target": str(path)})
    return result


def _tcp(target, timeout):
    host, _, port = target.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        return ""


class _NoProxy(urllib.request.ProxyHandler):
    def __init__(self):
        super().__init__({})


_OPENER = urllib.request.build_opener(_NoProxy())


def _http(target, timeout):
    try:
        with _OPENER.open(target, timeout=timeout) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        raise OSError(f"HTTP {exc.code}") from None


def run(promise, uid=None, gid=None, cwd=None):
    """{"name", "ok", "message"} for one promise."""
    name, kind, target = promise.get("name"), promise.get("type"), promise.get("target", "")
    timeout = float(promise.get("timeout", 5))
    try:
        if kind == "tcp":
            message = _tcp(target, timeout) or f"{target} accepts connections"
        elif kind == "http":
            message = _http(target, timeout)
        elif kind == "command":
            result = subprocess.run(["/bin/sh", "-c", target], capture_output=True, text=True,
                                    timeout=timeout, cwd=cwd, user=uid, group=gid,
                                    stdin=subprocess.DEVNULL)
            if result.returncode != 0:
                tail = (result.stdout + result.stderr).strip().splitlines()
                raise OSError(f"exit code {result.returncode}" + (f": {tail[-1]}" if tail else ""))
            message = "ok"
        else:
            raise OSError(f"unreadable promise declaration {target}")
        return {"name": name, "ok": True, "message": message[:500]}
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return {"name": name, "ok": False, "message": f"{kind} {target}: {exc}"[:500]}

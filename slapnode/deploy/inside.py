"""The partition's side of the agent: what runs inside a partition, as its user.

``python -m slapnode.deploy.inside apply|promises`` with a JSON request on
stdin and a JSON answer on stdout. The root agent starts it inside the
partition's container (``lxc-attach`` with the partition's uid and gid) or,
with ``isolation = user``, as the partition user; either way everything a
partition's parameters or files can influence runs here, never in root's
process or namespaces:

* ``apply``: deploy the instance profile (recipes, templates), start
  supervisord if asked (usually it started with the container, while the
  profile deploys), reload its programs, (re)start them, then watch programs
  and promises until the instance settles or the wait is over; answer with
  what was seen and what the instance published.
* ``promises``: run the declared promises (or the ones named) once.

The answer is data for the agent, which checks it as it would anything a
partition says: it may be a lie, it is never trusted beyond that partition.
"""

import json
import os
import sys
import time
from pathlib import Path

MAX_REQUEST = 8 << 20
MAX_PUBLISHED = 256 << 10       # bytes per publish file
PROGRAMS_EVERY = 0.1            # seconds between two readings of the programs while watching

# [slap-configuration] values the node decides alone; every other given value (the
# parameters, the title, the shared instances, the software type) comes from a
# requester and is data only (see Template: never template source).
NODE_VALUES = ("computer", "partition", "ipv4", "ipv6", "partition-root", "software-root",
               "user", "uid", "gid", "cert-file", "key-file", "ca-file", "mail-relay",
               "mail-from")


def trusted_values():
    return [("slap-configuration", key) for key in NODE_VALUES]


def _one_line(exc):
    text = str(getattr(exc, "message", "") or exc) or type(exc).__name__
    lines = text.strip().splitlines()
    return (lines[-1] if lines else type(exc).__name__)[:1000]


def json_files(root, folder, cap):
    """(name, parsed JSON) of the regular ``*.json`` files in ``root/folder``, each read
    without following links or blocking on a FIFO, at most ``cap`` bytes."""
    from .. import safefs

    try:
        with safefs.opened_dir(root, folder) as fd:
            names = [n for n in safefs.list_files(fd) if n.endswith(".json")][:1000]
            for name in names:
                try:
                    yield name, json.loads(safefs.read_at(fd, name, cap))
                except (OSError, ValueError):
                    yield name, None
    except OSError:
        return


def published(root):
    """(own connection parameters, {shared instance id: parameters}) from etc/publish."""
    own, shared = {}, {}
    for _, record in json_files(root, "etc/publish", MAX_PUBLISHED):
        if not isinstance(record, dict) or not isinstance(record.get("values"), dict):
            continue
        target = record.get("shared_instance")
        if target is None:
            own.update(record["values"])
        else:
            try:
                shared.setdefault(str(int(target)), {}).update(record["values"])
            except (TypeError, ValueError):
                continue
    return own, shared


def spawn_supervisord(root, python):
    """Start supervisord for this partition, detached (it outlives this process)."""
    import subprocess

    from ..proc import clean_env, spawn_detached
    from . import supervisor

    socket_path = supervisor.paths(root)["socket"]
    if socket_path.is_socket() or socket_path.is_symlink():
        socket_path.unlink()
    log = open(Path(root) / "var" / "log" / "supervisord.out", "ab")
    try:
        spawn_detached([python, "-m", "supervisor.supervisord", "-c",
                        str(supervisor.paths(root)["conf"])],
                       cwd=str(root), env=clean_env(root), stdin=subprocess.DEVNULL,
                       stdout=log, stderr=log, start_new_session=True)
    finally:
        log.close()


def wait_for_supervisord(root):
    from . import supervisor

    deadline = time.monotonic() + 15
    while not supervisor.alive(root):
        if time.monotonic() > deadline:
            raise RuntimeError("the partition's supervisord did not start; see "
                               f"{root}/var/log/supervisord.log")
        time.sleep(0.02)


def watch(root, requested, wait):
    """Programs and promises until the instance settles or ``wait`` seconds pass.

    The promises (a connection attempt, usually refused until the service listens) are
    tried every 5 ms while a service is most likely coming up, then every 50 ms; the
    programs' states cost supervisord an XML-RPC answer and are read every 0.1 s (a
    service that crashes is seen within that). On a busy node (a burst: dozens of
    partitions starting at once) polling harder would only take CPU from the services."""
    from . import promises, supervisor
    from .status import status_of

    started = time.monotonic()
    deadline = started + wait
    programs, running, programs_at = {}, False, 0.0
    while True:
        now = time.monotonic()
        if now >= programs_at:
            programs = supervisor.programs(root)
            running = bool(programs) or supervisor.alive(root)
            programs_at = now + PROGRAMS_EVERY
        results = promises.run_all(root) if running and requested == "started" else []
        status, _ = status_of(requested, programs, results, running)
        if status != "deploying" or time.monotonic() > deadline:
            return programs, running, results
        time.sleep(0.005 if now - started < 0.5 else 0.05)


def instance_profile(sr_dir, software_type):
    """The release's ``instance-<type>.cfg``, else its ``instance.cfg``."""
    for name in (f"instance-{software_type}.cfg", "instance.cfg"):
        path = Path(sr_dir) / name
        if path.is_file():
            return path
    return None


def apply(request):
    from . import supervisor

    root = Path(request["root"])
    answer = {"changed": False, "digest": None, "error": None, "programs": {},
              "running": False, "promises": [], "declared": [], "connection": {}, "shared": {},
              "seconds": {}}
    clock = time.monotonic()

    def lap(name):
        nonlocal clock
        now = time.monotonic()
        answer["seconds"][name] = round(now - clock, 4)
        clock = now

    lap("start")
    if request.get("supervise") and request.get("spawn"):
        spawn_supervisord(root, request.get("python") or sys.executable)
    if request.get("software"):
        from ..software import engine

        profile = instance_profile(request["software"], request.get("type") or "default")
        try:
            if profile is None:
                raise RuntimeError(f"the release has no instance.cfg (in {request['software']})")
            digest, changed = engine.build(str(profile), root,
                                           root / "tmp" / ".download-cache",
                                           overrides=request.get("given") or {},
                                           trusted=trusted_values())
        except Exception as exc:        # the profile's failure, said in one line
            answer["error"] = _one_line(exc)
            answer["connection"], answer["shared"] = published(root)
            return answer
        answer["digest"], answer["changed"] = digest, changed
        lap("deploy")
    if request.get("supervise"):
        step = "starting supervisord"
        try:
            wait_for_supervisord(root)
            step = "reloading the services"
            added, changed, _ = supervisor.reload(root)
            if request.get("restart") and answer["changed"]:
                step = "restarting the services"    # they re-read what the deploy rewrote
                supervisor.restart_all(root, skip=set(added) | set(changed))
            step = "starting the services"
            supervisor.start_all(root, include_fatal=bool(request.get("retry_fatal")))
            lap("supervise")
        except Exception as exc:
            answer["error"] = f"{step}: {_one_line(exc)}"
        else:
            programs, running, results = watch(root, "started", float(request.get("wait", 3.0)))
            answer.update(programs=programs, running=running, promises=results)
            lap("watch")
    from . import promises

    answer["declared"] = [p["name"] for p in promises.declared(root)]
    answer["connection"], answer["shared"] = published(root)
    answer["forwards"] = forwards(root)
    return answer


def forwards(root):
    """{name: partition port} the instance asks to publish on the node (etc/forward)."""
    found = {}
    for name, record in json_files(root, "etc/forward", 4096):
        if isinstance(record, dict) and isinstance(record.get("port"), int):
            found[name[:-len(".json")]] = record["port"]
    return found


def promises_now(request):
    from . import promises

    return {"promises": promises.run_all(Path(request["root"]), request.get("names"))}


def main(argv):
    command = argv[0] if argv else ""
    if command not in ("apply", "promises"):
        print("usage: python -m slapnode.deploy.inside apply|promises < request.json",
              file=sys.stderr)
        return 2
    # Only the answer goes to stdout: whatever else prints (recipes, libraries) goes
    # to stderr, so the agent never mistakes it for the answer.
    answer_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        request = json.loads(sys.stdin.buffer.read(MAX_REQUEST))
        os.chdir(request["root"])
        answer = apply(request) if command == "apply" else promises_now(request)
    except Exception as exc:
        print(f"{type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1
    json.dump(answer, answer_stream)
    answer_stream.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

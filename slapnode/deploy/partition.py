"""One partition at work: deploy its instance, start, stop, destroy, observe.

Owns what happens inside a partition: running the release's instance profile
as the partition user (with ``[slap-configuration]`` and ``[slap-parameter]``
given by the node), the partition's supervisord, the instance's status from
its programs and promises, its published connection parameters, and wiping
it clean when the instance is destroyed.
"""

import hashlib
import json
import os
import pwd
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import SlapnodeError
from ..format import users as format_users
from ..software import software_dir, worker
from . import supervisor


@dataclass
class Part:
    """A formatted partition, as the agent needs it."""

    reference: str
    user: str
    uid: int
    gid: int
    root: Path
    ipv4: str
    ipv6: str


def parts_of(config):
    from ..format import plan

    result = {}
    for spec in plan.desired_partitions(config):
        try:
            entry = pwd.getpwnam(spec.user)
        except KeyError:
            continue
        result[spec.reference] = Part(spec.reference, spec.user, entry.pw_uid, entry.pw_gid,
                                      Path(spec.path), spec.ipv4, spec.ipv6)
    return result


def inputs_hash(instance, software_digest):
    """What a deployment depends on; unchanged inputs mean nothing to redeploy."""
    blob = json.dumps([instance.get("id"), instance.get("software"), instance.get("type"),
                       instance.get("parameters"), instance.get("shared_instances"),
                       software_digest], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def instance_profile(sr_dir, software_type):
    for name in (f"instance-{software_type}.cfg", "instance.cfg"):
        path = Path(sr_dir) / name
        if path.exists():
            return path
    return None


def _parameter_text(value):
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def overrides(config, part, instance):
    parameters = instance.get("parameters") or {}
    sr_dir = software_dir(config.software_root, instance["software"])
    return {
        "slap-configuration": {
            "computer": config.name, "partition": part.reference,
            "instance-title": instance["title"], "root-instance-title": instance["title"],
            "software-type": instance.get("type") or "default",
            "ipv4": part.ipv4, "ipv6": part.ipv6, "partition-root": str(part.root),
            "software-root": str(sr_dir), "user": part.user,
            "uid": str(part.uid), "gid": str(part.gid),
            "parameters": json.dumps(parameters, sort_keys=True),
            "shared-instances": json.dumps(instance.get("shared_instances") or [], sort_keys=True),
        },
        "slap-parameter": {k: _parameter_text(v) for k, v in parameters.items()},
    }


class Partition:
    def __init__(self, config, part, isolation):
        self.config = config
        self.part = part
        self.isolation = isolation

    @property
    def root(self):
        return self.part.root

    def _as_user(self, *args):
        return worker.run_as(self.part.uid, self.part.gid, self.root, args, cwd=self.root)

    def deploy(self, instance):
        """Run the instance profile in the partition as its user; True if that changed
        anything (the services must then re-read it). Raises SlapnodeError."""
        sr_dir = software_dir(self.config.software_root, instance["software"])
        profile = instance_profile(sr_dir, instance.get("type") or "default")
        if profile is None:
            raise SlapnodeError(f"the release has no instance.cfg (in {sr_dir})")
        fd, given = tempfile.mkstemp(dir=self.root / "tmp", prefix=".slap-", suffix=".json")
        with os.fdopen(fd, "w") as stream:
            json.dump(overrides(self.config, self.part, instance), stream)
        os.chown(given, self.part.uid, self.part.gid)
        try:
            result = self._as_user("deploy", profile, self.root, given)
        finally:
            os.unlink(given)
        if result.returncode != 0:
            raise SlapnodeError((result.stderr.strip().splitlines() or ["deploy failed"])[-1])
        conf = supervisor.paths(self.root)["conf"]
        text = supervisor.render(self.root, self.part.reference)
        if not conf.exists() or conf.read_text() != text:
            conf.write_text(text)
            os.chown(conf, self.part.uid, self.part.gid)
        supervisor.paths(self.root)["programs"].mkdir(exist_ok=True)
        os.chown(supervisor.paths(self.root)["programs"], self.part.uid, self.part.gid)
        return result.stdout.startswith("deployed")

    def start(self, retry_fatal=False, restart=False):
        """Run supervisord and its services; ``restart``: restart the running ones."""
        restart = restart and supervisor.alive(self.root)
        if not supervisor.alive(self.root):
            socket_path = supervisor.paths(self.root)["socket"]
            if socket_path.exists():
                socket_path.unlink()
            self.isolation.start(self.part)
            deadline = time.monotonic() + 15
            while not supervisor.alive(self.root):
                if time.monotonic() > deadline:
                    raise SlapnodeError("the partition's supervisord did not start; see "
                                        f"{self.root}/var/log/supervisord.log")
                time.sleep(0.02)
        supervisor.reload(self.root)
        if restart:             # a redeploy: services re-read what it rewrote
            supervisor.restart_all(self.root)
        supervisor.start_all(self.root, include_fatal=retry_fatal)

    def stop(self):
        self.isolation.stop(self.part)

    def destroy(self):
        """Stop everything and leave the partition as format made it, empty.
        No graceful stop: whatever the services would save is wiped anyway."""
        self.isolation.stop(self.part, graceful=False)
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()
        from ..format.plan import partition_spec

        index = int(self.part.reference[len(self.config.partition_prefix):])
        format_users.ensure_partition_dir(partition_spec(self.config, index),
                                          self.part.uid, self.part.gid)

    def connection(self):
        """(own parameters, {shared instance id: parameters}) published so far."""
        own, shared = {}, {}
        for path in sorted((self.root / "etc" / "publish").glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            target = record.get("shared_instance")
            if target is None:
                own.update(record.get("values", {}))
            else:
                shared.setdefault(int(target), {}).update(record.get("values", {}))
        return own, shared

    def programs(self):
        return supervisor.programs(self.root)

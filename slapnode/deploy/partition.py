"""One partition at work, seen from the root agent: apply, stop, destroy, observe.

Owns what the agent asks of a partition and how it reads the answer. The work
itself (running the release's instance profile with ``[slap-configuration]``
and ``[slap-parameter]``, supervisord, promises) happens inside the
partition, as its user (``slapnode.deploy.inside`` through the isolation);
root only hands over the request on a pipe, checks the answer (sizes, types,
finite numbers: it comes from untrusted code), stops processes, and wipes
the partition through descriptors (``safefs``) when the instance is destroyed.
"""

import hashlib
import json
import math
import pwd
import time
from dataclasses import dataclass
from pathlib import Path

from .. import safefs, trace
from ..errors import SlapnodeError
from ..format import users as format_users
from ..software import software_dir
from . import certificate, deployer, supervisor
from .inside import NODE_VALUES, trusted_values  # noqa: F401 (the rule lives inside)

DEPLOY_TIMEOUT = 900.0          # an instance profile that runs longer than this is stopped
PROMISE_TIMEOUT = 130.0         # every promise runs at once; each is capped at 60 s
DESTROY_GRACE = 3.0             # seconds a destroyed partition's services get to stop
MAX_VALUE = 64 << 10            # a published value longer than this is cut
MAX_KEYS = 1000
WARM_WAIT = 15.0                # seconds a starting supervisord gets to open its deployer


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


def _parameter_text(value):
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def mail_relay(config):
    """HOST:PORT of the node's mail relay as partitions reach it ("" without one). Pure."""
    from .. import nodeconfig

    if not nodeconfig.relays_mail(config):
        return ""
    return f"{nodeconfig.gateway_v4(config)}:{config.mail_port}"


def overrides(config, part, instance):
    """[slap-configuration] and [slap-parameter] as the agent gives them. Pure."""
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
            "hostname": instance.get("hostname") or part.reference,
            # the node's relay and the address mail leaves from (slapnode:sendmail)
            "mail-relay": mail_relay(config),
            "mail-from": instance.get("mail_from") or "",
            "parameters": json.dumps(parameters, sort_keys=True),
            "shared-instances": json.dumps(instance.get("shared_instances") or [], sort_keys=True),
            # the partition's TLS files, once the node has them ("" before: no TLS yet)
            **(certificate.paths(part.root) if instance.get("tls") else
               dict.fromkeys(certificate.paths(part.root), "")),
        },
        "slap-parameter": {k: _parameter_text(v) for k, v in parameters.items()},
    }


# -- what the partition side says, checked ------------------------------------------------

def _text(value, limit):
    return value[:limit] if isinstance(value, str) else ""


def _clean_value(value):
    """A published value as the master may store it: text, or finite JSON."""
    if isinstance(value, str):
        return value[:MAX_VALUE]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) and abs(value) < 2**63 else None
    text = json.dumps(value, sort_keys=True, allow_nan=False, default=str)
    return text[:MAX_VALUE]


def clean_parameters(values):
    if not isinstance(values, dict):
        return {}
    return {str(k)[:256]: _clean_value(v) for k, v in list(values.items())[:MAX_KEYS]}


def clean_promises(results):
    if not isinstance(results, list):
        return []
    cleaned = []
    for item in results[:100]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        interval = item.get("interval")
        interval = float(interval) if isinstance(interval, (int, float)) and \
            math.isfinite(interval) else 60.0
        cleaned.append({"name": item["name"][:128], "ok": item.get("ok") is True,
                        "message": _text(item.get("message"), 500),
                        "interval": min(max(interval, 1.0), 86400.0)})
    return cleaned


def clean_programs(programs):
    if not isinstance(programs, dict):
        return {}
    result = {}
    for name, value in list(programs.items())[:1000]:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            result[str(name)[:128]] = (_text(value[0], 32), _text(value[1], 500))
    return result


def _forwards(value):
    """{name: TCP port} a partition asks to publish, checked."""
    if not isinstance(value, dict):
        return {}
    return {str(name)[:64]: port for name, port in list(value.items())[:16]
            if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536}


def _names(value):
    if not isinstance(value, list):
        return []
    return [name[:128] for name in value[:100] if isinstance(name, str)]


@dataclass
class Applied:
    """What a partition said after ``apply``, checked."""

    error: str
    changed: bool
    programs: dict
    running: bool
    promises: list
    declared: list
    connection: dict
    shared: dict
    forwards: dict


def applied_from(answer):
    shared = {}
    raw_shared = answer.get("shared")
    if isinstance(raw_shared, dict):
        for key, values in list(raw_shared.items())[:MAX_KEYS]:
            try:
                shared[int(key)] = clean_parameters(values)
            except (TypeError, ValueError):
                continue
    error = answer.get("error")
    return Applied(error=_text(error, 1000) if error else "",
                   changed=answer.get("changed") is True,
                   programs=clean_programs(answer.get("programs")),
                   running=answer.get("running") is True,
                   promises=clean_promises(answer.get("promises")),
                   declared=_names(answer.get("declared")),
                   forwards=_forwards(answer.get("forwards")),
                   connection=clean_parameters(answer.get("connection")),
                   shared=shared)


class Partition:
    def __init__(self, config, part, isolation, zone=""):
        self.config = config
        self.part = part
        self.isolation = isolation
        self.zone = zone

    @property
    def root(self):
        return self.part.root

    def apply(self, instance, deploy=True, supervise=True, restart=True, retry_fatal=False,
              wait=3.0, complete=None):
        """Deploy the instance (``deploy``), run its services (``supervise``), wait up to
        ``wait`` s for it to settle; all inside the partition. ``complete``: called once
        the container is ready, it gives the instance as deployed (the agent's
        certificate is asked for meanwhile). Returns ``Applied``."""
        trace.mark(f"{self.part.reference} apply")
        try:
            self.write_supervisor_conf()
            started = self.isolation.ensure_running(self.part, services=supervise,
                                                    hostname=instance.get("hostname"),
                                                    zone=self.zone)
            trace.mark(f"{self.part.reference} container ready")
        finally:
            if complete is not None:        # (its thread is never left running)
                instance = complete()
        trace.mark(f"{self.part.reference} started")
        request = {"root": str(self.root), "reference": self.part.reference,
                   "supervise": supervise, "spawn": supervise and not started,
                   "restart": restart, "retry_fatal": retry_fatal, "wait": wait}
        if deploy:
            sr_dir = software_dir(self.config.software_root, instance["software"])
            request["software"] = str(sr_dir)
            request["type"] = instance.get("type") or "default"
            request["given"] = overrides(self.config, self.part, instance)
        timeout = DEPLOY_TIMEOUT + wait + 30
        result = None
        if supervise and not request["spawn"]:
            result = self._warm("apply", request, timeout, wait=WARM_WAIT if started else 0)
        via = "deployer"
        if result is None:
            via = "lxc-attach" if self.isolation.name == "lxc" else "a new process"
            result = self.isolation.run_inside(self.part, "apply", request, timeout=timeout)
        if result.timed_out:
            self.isolation.stop(self.part, graceful=False)
            raise SlapnodeError(f"the deployment did not finish within {DEPLOY_TIMEOUT:.0f} s; "
                                "the partition was stopped")
        from .isolation import answer_of

        answer = answer_of(result, "the deployment")
        trace.mark(f"{self.part.reference} applied via {via} {answer.get('seconds')}")
        applied = applied_from(answer)
        if applied.error:
            raise SlapnodeError(applied.error)
        return applied

    def _warm(self, command, request, timeout, wait=0.0):
        """The partition side's answer from its warm deployer (a fork of its supervisord,
        ``deploy/deployer.py``); None when it does not answer. A supervisord that is
        starting gets up to ``wait`` seconds to open its socket: less than a new
        interpreter entering the container would take, and under a burst (many
        containers starting at once on a busy machine) a new interpreter would only
        add to the load."""
        from .isolation import ANSWER_CAP

        deadline = time.monotonic() + wait
        while True:
            result = deployer.ask(self.root, self.part.uid, command, request, timeout,
                                  ANSWER_CAP)
            if result is not None or time.monotonic() >= deadline:
                return result
            if supervisor.alive(self.root, uid=self.part.uid):
                # up: its deployer listened before it answered, unless it has none
                return deployer.ask(self.root, self.part.uid, command, request, timeout,
                                    ANSWER_CAP)
            time.sleep(0.02)

    def wait_warm(self, wait=WARM_WAIT):
        """Wait until the partition's deployer answers (a container just started with
        its supervisord). SlapnodeError when it does not within ``wait`` seconds."""
        if self._warm("ping", {}, 5.0, wait=wait) is None:
            raise SlapnodeError(f"its supervisord did not open the deployer within {wait:.0f} s; "
                                f"see {self.root}/var/log/supervisord.log")

    def write_supervisor_conf(self):
        """etc/supervisord.conf, written by root through descriptors (never through a
        link); a skeleton the partition user broke is made again first."""
        data = supervisor.render(self.root, self.part.reference).encode()
        for attempt in (1, 2):
            try:
                with safefs.opened_dir(self.root, "etc", uid=self.part.uid) as fd:
                    safefs.write_at(fd, "supervisord.conf", data, self.part.uid, self.part.gid)
                return
            except safefs.Refused:
                if attempt == 2:
                    raise
                self._repair_skeleton()

    def _repair_skeleton(self):
        from ..format.plan import partition_spec

        index = int(self.part.reference[len(self.config.partition_prefix):])
        format_users.ensure_partition_dir(partition_spec(self.config, index),
                                          self.part.uid, self.part.gid)

    def promises(self, names):
        """Run the named promises inside the partition now: by its supervisord (no new
        process), or, when that does not answer, by the partition side."""
        import xmlrpc.client

        try:
            answer = supervisor.run_promises(self.root, names, uid=self.part.uid,
                                             timeout=PROMISE_TIMEOUT)
            return clean_promises(answer)
        except (OSError, xmlrpc.client.Error):
            pass
        from .isolation import answer_of

        result = self.isolation.run_inside(self.part, "promises",
                                           {"root": str(self.root), "names": sorted(names)},
                                           timeout=PROMISE_TIMEOUT)
        return clean_promises(answer_of(result, "the promises").get("promises"))

    def stop(self):
        self.isolation.stop(self.part)

    def destroy(self):
        """Stop everything and leave the partition as format made it, empty.
        Services get their stop signal and a short grace (DESTROY_GRACE), so that they
        can say goodbye (a Condor worker leaves its pool) but never hold a destroy up;
        what they would save is wiped anyway. The wipe goes through descriptors: a link
        left in the partition is removed, never followed."""
        self.isolation.stop(self.part, graceful=True, grace=DESTROY_GRACE)
        safefs.empty_dir(self.root)
        self._repair_skeleton()

    def programs(self):
        return supervisor.programs(self.root, uid=self.part.uid)

    def alive(self):
        return supervisor.alive(self.root, uid=self.part.uid)

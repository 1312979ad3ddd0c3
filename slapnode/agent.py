"""The node agent: reconcile partitions with the desired state, report, repeat.

Owns the reconcile loop of the design card: ``plan(desired, local)`` (pure)
says per partition what to do; ``InstancePass`` does it with bounded
parallelism and reports status, connection parameters and promises;
``Daemon`` long-polls the master, keeps software builds and deployments from
blocking each other, re-checks health, and rides out master outages (the
instances keep running; it reconnects with backoff and jitter).

Local state is one file, ``<state_dir>/partitions.json``: per partition the
instance it holds and the hash of the inputs it was deployed from. A
partition whose inputs did not change is skipped by comparing that hash.
Every step is idempotent, so killing the agent at any moment and starting it
again converges.
"""

import concurrent.futures
import datetime
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import safefs, trace, usage
from .deploy import isolation as isolation_mod
from .deploy import certificate, promises, zygote
from .deploy import status as _status
from .deploy.forwards import Forwards
from .deploy.partition import Partition, inputs_hash, parts_of
from .errors import MasterError, SlapnodeError
from .software import engine, software_dir
from . import policy as policy_mod
from .states import DESTROYED, STARTED, STOPPED, InstanceStatus

PARALLEL_PARTITIONS = 8
REPORT_EVERY = 0.25             # seconds between two reports of a pass that is still running
NEWER_EVERY = 0.05              # how often a running pass looks for a newer desired state
SOFTWARE_RECHECK = 600.0        # supplied releases are re-checked (profile changed?) this often
FATAL_RETRY_FIRST = 10.0        # a crash loop is retried after 10 s, 20 s, … at most 10 min
FATAL_RETRY_MAX = 600.0
USAGE_EVERY = 60.0              # a partition's usage goes to the master at least this often


@dataclass
class Action:
    reference: str
    kind: str                   # deploy | start | stop | destroy | check
    instance: dict = None
    inputs: str = ""


def plan(doc, local, software_digests):
    """[Action] per partition, pure. ``local``: {ref: {"instance_id", "hash", "state"}};
    ``software_digests``: {url: digest of the built release, or None if not built}."""
    actions = []
    seen = set()
    for item in doc.get("partitions", []):
        ref, instance = item["reference"], item.get("instance")
        seen.add(ref)
        here = local.get(ref)
        if instance is None:
            if here:
                actions.append(Action(ref, "destroy"))
            continue
        if instance["state"] == DESTROYED:
            actions.append(Action(ref, "destroy", instance))
            continue
        if here and here.get("instance_id") != instance["id"]:
            actions.append(Action(ref, "destroy"))          # the partition changed hands
            here = None
        digest = software_digests.get(instance["software"])
        if digest is None:
            actions.append(Action(ref, "wait", instance))   # its software is not built yet
            continue
        inputs = inputs_hash(instance, digest)
        if not here or here.get("hash") != inputs:
            actions.append(Action(ref, "deploy", instance, inputs))
        elif instance["state"] == STARTED:
            actions.append(Action(ref, "start" if here.get("state") != STARTED else "check",
                                  instance, inputs))
        elif here.get("state") != STOPPED:
            actions.append(Action(ref, "stop", instance, inputs))
        else:
            actions.append(Action(ref, "check", instance, inputs))
    for ref in local:
        if ref not in seen:
            actions.append(Action(ref, "destroy"))
    return actions


status_of = _status.status_of     # (re-exported: the pure rule lives in deploy/status.py)


CERT_RETRY = datetime.timedelta(minutes=3)     # a refused certificate is asked for again then


def _with_tls(instance, record):
    """The instance as deployed: with ``tls`` when the partition has its certificate."""
    cert = record.get("certificate") or {}
    return {**instance, "tls": bool(cert.get("ok")) and cert.get("instance_id") == instance["id"]}


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


class LocalState:
    def __init__(self, state_dir):
        self.path = Path(state_dir) / "partitions.json"
        self.lock = threading.Lock()
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def get(self):
        with self.lock:
            return json.loads(json.dumps(self.data))

    def get_one(self, ref):
        """A copy of one partition's entry (or {})."""
        with self.lock:
            return json.loads(json.dumps(self.data.get(ref) or {}))

    def set(self, ref, value):
        with self.lock:
            if value is None:
                self.data.pop(ref, None)
            else:
                self.data[ref] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.data, sort_keys=True))
            os.replace(tmp, self.path)


@dataclass
class Outcome:
    reference: str
    kind: str
    status: str = ""
    reason: str = ""
    seconds: float = 0.0
    report: dict = field(default_factory=dict)
    shared: list = field(default_factory=list)
    part: object = None


class InstancePass:
    """One pass over the partitions: do what ``plan`` says, observe, report.

    ``software_failure(url) -> (reason, next try) | None`` tells why a release an
    instance waits for is not built (the daemon passes its software pass's; a
    single pass reads the node's build backoff file).
    """

    def __init__(self, config, client=None, say=None, parallel=PARALLEL_PARTITIONS,
                 software_failure=None):
        self.config = config
        self.client = client
        self.say = say or (lambda message: None)
        self.parallel = parallel
        self.isolation = isolation_mod.isolation_for(config)
        self.local = LocalState(config.state_dir)
        self.last_reports = {}
        self.usage_sent = {}        # reference -> monotonic time its usage was last reported
        self.last_said = {}
        self.software_failure = software_failure or _failure_from_file(config)
        self.zone = ""
        self.forwards = Forwards(config)
        self.rules_changed = False
        self.public_ipv4 = None
        self.after_freeze = False       # the next usage covers frozen time: no credit for it
        self.locks, self.locks_guard = {}, threading.Lock()

    def lock(self, reference):
        """The lock of one partition: held while the pass works in it (and while the
        warmer starts or stops it, ``deploy/warm.py``)."""
        with self.locks_guard:
            return self.locks.setdefault(reference, threading.Lock())

    def software_digests(self, doc):
        urls = {p["instance"]["software"] for p in doc.get("partitions", []) if p.get("instance")}
        return {url: engine.completed_digest(software_dir(self.config.software_root, url))
                for url in urls}

    def run(self, doc, only_changed_reports=False, newer=None):
        """Plan ``doc`` and do it, ``parallel`` partitions at a time; report. With
        ``newer`` (the latest desired state, as the daemon has it), a state that arrives
        while this pass works has its new actions started in the same pass, on
        partitions this pass has not touched yet: a burst of requests arriving over a
        second or two is not held behind the first one's deployment."""
        trace.mark("pass")
        parts = parts_of(self.config)
        self.zone = (doc.get("dns") or {}).get("zone", "")
        actions = plan(doc, self.local.get(), self.software_digests(doc))
        self._names(doc, parts)         # before: a service may look its peers up at once
        handled = {action.reference for action in actions}
        outcomes, done, said_at = [], [], time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max(1, self.parallel)) as pool:
            pending = {pool.submit(self._do, action, parts.get(action.reference))
                       for action in actions}
            while pending:
                finished, pending = concurrent.futures.wait(
                    pending, timeout=NEWER_EVERY if newer else None,
                    return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    outcomes.append(future.result())
                    done.append(outcomes[-1])
                latest = newer() if newer else doc
                if latest is not None and latest is not doc:
                    doc = latest
                    more = [a for a in plan(doc, self.local.get(), self.software_digests(doc))
                            if a.reference not in handled and a.kind != "check"]
                    if more:
                        trace.mark(f"pass takes {len(more)} more")
                        self._names(doc, parts)
                        handled |= {action.reference for action in more}
                        pending |= {pool.submit(self._do, action, parts.get(action.reference))
                                    for action in more}
                # a burst is reported as it comes, not when its last instance is done
                # (not while a port is being forwarded: that is applied after the pass)
                if pending and done and time.monotonic() - said_at >= REPORT_EVERY \
                        and not self.rules_changed:
                    self._report([o for o in done if o.kind != "check"], True)
                    done, said_at = [], time.monotonic()
        self._rules()
        by_uid = usage.processes_by_uid()           # one scan of /proc for the whole pass
        lxc = self.isolation.name == "lxc"
        for outcome in outcomes:
            if outcome.part is not None and "promises" in outcome.report:
                part = outcome.part
                outcome.report["usage"] = usage.partition_usage(
                    part, by_uid, self.isolation.container(part) if lxc else None,
                    isolation_mod.veth_name(part.uid) if lxc else None)
                if self.after_freeze:
                    outcome.report["usage"]["frozen"] = 1.0
        self.after_freeze = False
        over = policy_mod.over_disk(self.config.policy, {
            o.reference: o.report["usage"]["disk_mb"] for o in outcomes if "usage" in o.report})
        for outcome in outcomes:            # the owner's disk is not filled silently
            if outcome.reference in over:
                outcome.status, outcome.reason = InstanceStatus.ERROR, over[outcome.reference]
        self._report(outcomes, only_changed_reports)
        return outcomes

    # -- one partition ----------------------------------------------------------------
    def _do(self, action, part):
        started = time.monotonic()
        outcome = Outcome(action.reference, action.kind)
        if part is None:
            outcome.status, outcome.reason = InstanceStatus.ERROR, "partition not formatted"
            return self._finish(outcome, action, started)
        partition = Partition(self.config, part, self.isolation, self.zone)
        with self.lock(action.reference):
            self._act(action, partition, outcome)
        return self._finish(outcome, action, started)

    def _act(self, action, partition, outcome):
        try:
            if action.kind == "destroy":
                partition.destroy()
                self.local.set(action.reference, None)
                if self.forwards.drop(action.reference):
                    self.rules_changed = True
                outcome.status = InstanceStatus.DESTROYED
            elif action.kind == "wait":
                outcome.status, outcome.reason = self._waiting(action.instance)
            else:
                self._run(action, partition, outcome)
        except SlapnodeError as exc:
            outcome.status, outcome.reason = InstanceStatus.ERROR, str(exc)
        except Exception as exc:        # keep the other partitions going; say what broke
            outcome.status, outcome.reason = InstanceStatus.ERROR, f"{type(exc).__name__}: {exc}"

    def _waiting(self, instance):
        failure = self.software_failure(instance["software"])
        if failure is None:
            return InstanceStatus.DEPLOYING, "waiting for its software release to be built"
        reason, next_try = failure
        when = time.strftime("%H:%M:%S", time.localtime(next_try))
        return (InstanceStatus.ERROR, f"its software release failed to build: {reason}; "
                f"next try at {when}")

    def _run(self, action, partition, outcome):
        """deploy, start, stop or check one instance; fills ``outcome``."""
        instance, wanted = action.instance, action.instance["state"]
        here = self.local.get_one(action.reference)
        if action.kind == "deploy":
            here = {"instance_id": instance["id"], "hash": "", "state": "",
                    "certificate": here.get("certificate")}
        record = {**here, "instance_id": instance["id"], "hash": action.inputs, "state": wanted}
        kept = dict(here.get("promises") or {})
        if action.kind == "deploy" and wanted == STARTED:
            self.local.set(action.reference, {**record, "hash": "", "state": ""})
            applied = partition.apply(instance, deploy=True, supervise=True, retry_fatal=True,
                                      complete=self._certified(partition, instance, record))
            record.update(fatal=0, retry_at=0)
            self._seen(record, applied)
            self._forwarded(partition, record, applied)
        elif action.kind == "deploy":                   # deployed, and kept stopped
            self.local.set(action.reference, {**record, "hash": "", "state": ""})
            applied = partition.apply(instance, deploy=True, supervise=False,
                                      complete=self._certified(partition, instance, record))
            partition.stop()
            record.update(connection=applied.connection, shared=_keys(applied.shared),
                          promises={})
            self._forwarded(partition, record, applied)
        elif wanted == STARTED:
            self._certificate(partition, instance, record)      # renewed a third before its end
            programs = partition.programs()
            retry = _fatal_backoff(programs, here, action.kind == "start")
            record.update(fatal=retry.get("fatal", 0), retry_at=retry.get("retry_at", 0))
            if action.kind == "start" or retry.get("now") or not _healthy(programs):
                applied = partition.apply(instance, deploy=False, supervise=True,
                                          retry_fatal=retry.get("now", False))
                self._seen(record, applied)
                self._forwarded(partition, record, applied)
            else:
                due = promises.due(kept, time.time())
                if due:
                    now = time.time()
                    for result in partition.promises(due):
                        kept[result["name"]] = {**result, "at": now}
                    record["promises"] = kept
                record["programs"] = _as_lists(programs)
                record["running"] = True
        elif action.kind == "stop" or here.get("state") != STOPPED:
            partition.stop()
        if record != here:              # a health check that saw nothing new writes nothing
            self.local.set(action.reference, record)
        programs = (record.get("programs") or {}) if wanted == STARTED else {}
        running = bool(record.get("running")) if wanted == STARTED else partition.alive()
        results = ([{"name": r["name"], "ok": r["ok"], "message": r["message"]}
                    for _, r in sorted((record.get("promises") or {}).items())]
                   if wanted == STARTED else [])
        outcome.status, outcome.reason = status_of(wanted, programs, results, running)
        outcome.report = {"connection": record.get("connection") or {}, "promises": results}
        outcome.part = partition.part
        outcome.shared = [{"instance_id": int(sid), "connection": values,
                           "status": InstanceStatus.READY}
                          for sid, values in (record.get("shared") or {}).items()]

    def _certified(self, partition, instance, record):
        """Ask for the partition's certificate (when due) in a thread, while its container
        is started or renamed: two waits of some 15 ms each, on the master and on the
        kernel, that need not follow each other. Returns what the deployment calls once
        its container is ready: it waits for the certificate and gives the instance as
        deployed (``_with_tls``). ``record`` is this partition's, under its lock: only
        the thread writes its certificate, and only until it is joined."""
        if self.client is None or not certificate.due(record, instance["id"], _utcnow()):
            return lambda: _with_tls(instance, record)
        failed = []

        def work():
            try:
                self._certificate(partition, instance, record)
            except Exception as exc:    # noqa: BLE001 - raised in the deployment, as before
                failed.append(exc)
        thread = threading.Thread(target=work, name=f"certificate {partition.part.reference}",
                                  daemon=True)
        thread.start()

        def complete():
            thread.join()
            if failed:
                raise failed[0]
            return _with_tls(instance, record)
        return complete

    def _certificate(self, partition, instance, record):
        """The partition's certificate, made or renewed when due (best effort: a master
        without a CA, or one that is away, leaves the instance without TLS, not broken)."""
        if self.client is None or not certificate.due(record, instance["id"], _utcnow()):
            return
        trace.mark(f"{partition.part.reference} certificate")
        try:
            record["certificate"] = {**certificate.renew(self.client, partition.part,
                                                         instance["id"]), "ok": True}
            trace.mark(f"{partition.part.reference} certificate signed")
        except (MasterError, OSError, safefs.Refused) as exc:
            if getattr(exc, "status", None) != 409:     # 409: this master has no CA
                self.say(f"{partition.part.reference}: no certificate now ({exc})")
            # asked again after CERT_RETRY, not at every pass (no log filled by it)
            record["certificate"] = {"instance_id": instance["id"], "issued": _utcnow().isoformat(),
                                     "not_after": (_utcnow() + CERT_RETRY).isoformat()}

    def _forwarded(self, partition, record, applied):
        """Publish the ports the partition asks for on the node; their addresses join
        its connection parameters."""
        changed, ports = self.forwards.update(partition.part.reference, partition.part.ipv4,
                                              applied.forwards)
        self.rules_changed |= changed
        if ports:
            if self.public_ipv4 is None:
                from .format import firewall

                self.public_ipv4 = firewall.public_ipv4(self.config)
            record["connection"] = {**(record.get("connection") or {}),
                                    **{name: f"{self.public_ipv4}:{port}"
                                       for name, port in ports.items()}}

    def _rules(self):
        """After a pass: the node's rules follow the forwarded ports."""
        from .format import firewall

        if self.rules_changed:
            self.rules_changed = False
            try:
                firewall.apply(self.config, self.forwards.all())
            except SlapnodeError as exc:
                self.say(f"forwarded ports not applied: {exc}")

    def _names(self, doc, parts):
        """Before a pass: the node's resolver knows the names of its instances."""
        from .format import dns

        if not self.config.dns:
            return
        entries = []
        for item in doc.get("partitions", []):
            instance, part = item.get("instance"), parts.get(item["reference"])
            if instance and part and instance.get("hostname") and instance["state"] != DESTROYED:
                entries.append((instance["hostname"], part.ipv4, part.ipv6))
        try:
            dns.write_hosts(self.config, entries)
            info = doc.get("dns") or {}
            if dns.ensure(self.config, info.get("zone", ""), info.get("servers", [])):
                self.say("the node's resolver started (instance names, then upstream)")
        except (OSError, SlapnodeError) as exc:
            self.say(f"the node's resolver is not running: {exc}")

    @staticmethod
    def _seen(record, applied):
        """Keep what an apply saw. Every declared promise is kept; one it could not
        run yet counts as failing, so that it is run at the next check."""
        now = time.time()
        results = {r["name"]: {**r, "at": now} for r in applied.promises}
        promises_kept = {name: results.get(name) or {"name": name, "ok": False, "at": 0,
                                                     "message": "not checked yet",
                                                     "interval": 60.0}
                         for name in applied.declared}
        record.update(programs=_as_lists(applied.programs), running=applied.running,
                      promises=promises_kept, connection=applied.connection,
                      shared=_keys(applied.shared))

    def _finish(self, outcome, action, started):
        outcome.seconds = time.monotonic() - started
        if action.instance is not None:
            outcome.report.setdefault("connection", None)
            outcome.report["instance_id"] = action.instance["id"]
        line = (f"{outcome.reference}: {action.kind} -> {outcome.status}"
                f"{' (' + outcome.reason + ')' if outcome.reason else ''}")
        # Health checks that change nothing are not news: say only what changed.
        if action.kind not in ("check", "wait") or self.last_said.get(outcome.reference) != line:
            self.say(f"{line} [{outcome.seconds:.2f} s]")
        self.last_said[outcome.reference] = line
        return outcome

    def _report(self, outcomes, only_changed):
        if self.client is None:
            return
        items, shared = [], []
        for outcome in outcomes:
            if "instance_id" not in outcome.report:
                continue
            item = {"partition": outcome.reference, "instance_id": outcome.report["instance_id"],
                    "status": outcome.status, "reason": outcome.reason,
                    "connection": outcome.report.get("connection"),
                    "promises": outcome.report.get("promises")}
            key = json.dumps(item, sort_keys=True)
            item["usage"] = outcome.report.get("usage")
            # usage alone is news once every USAGE_EVERY seconds (the master's history)
            usage_due = item["usage"] is not None and \
                time.monotonic() - self.usage_sent.get(outcome.reference, -USAGE_EVERY) >= USAGE_EVERY
            if only_changed and self.last_reports.get(outcome.reference) == key and not usage_due:
                continue
            self.last_reports[outcome.reference] = key
            if item["usage"] is not None:
                self.usage_sent[outcome.reference] = time.monotonic()
            items.append(item)
            shared += outcome.shared
        if items or shared:
            try:
                trace.mark(f"report {len(items)}")
                self.client.report(instances=items, shared=shared)
                trace.mark("reported")
            except MasterError as exc:
                self.say(f"report failed: {exc}")
                self.last_reports.clear()
                self.usage_sent.clear()


def _as_lists(programs):
    """Programs as the state file keeps them (JSON has no tuples)."""
    return {name: list(value) for name, value in programs.items()}


def _keys(shared):
    return {str(k): v for k, v in shared.items()}


def _healthy(programs):
    """Supervisord up and every service running or on its way: nothing to start."""
    return bool(programs) and all(state in ("RUNNING", "STARTING", "BACKOFF", "FATAL")
                                  for state, _ in programs.values())


def _fatal_backoff(programs, here, fresh, now=None):
    """Crash loops are retried with capped exponential backoff, never given up. Pure."""
    if fresh:
        return {"now": True}
    now = time.time() if now is None else now
    fatal = [n for n, (state, _) in programs.items() if state == "FATAL"]
    if not fatal:
        return {"fatal": 0, "retry_at": 0}
    count = here.get("fatal", 0)
    if now < here.get("retry_at", 0):
        return {"now": False, "fatal": count, "retry_at": here["retry_at"]}
    delay = min(FATAL_RETRY_FIRST * 2 ** count, FATAL_RETRY_MAX)
    return {"now": count > 0, "fatal": count + 1, "retry_at": now + delay}


def _failure_from_file(config):
    from .software.supply import Backoff

    def failure(url):
        return Backoff(Path(config.state_dir) / "software-backoff.json").failure(url)
    return failure


class Daemon:
    """``node run``: long-poll, reconcile, report, keep going.

    It never spins: between passes it sleeps until the desired state changes, a
    build finishes or fails, a build's backoff runs out, or the next health tick.
    Health passes that change nothing say nothing; a master outage is one line
    when it starts and one when it ends.
    """

    def __init__(self, config, client, say=None, poll_wait=30.0, health_every=5.0,
                 config_path=None, policy_watch=True):
        from .software.supply import SoftwarePass

        self.config = config
        self.client = client
        self.say = say or (lambda message: None)
        self.poll_wait = poll_wait
        self.health_every = health_every
        self.software = SoftwarePass(config, client, self.say)
        self.instances = InstancePass(config, client, self.say,
                                      software_failure=self.software.failure)
        self.instances.rules_changed = True     # the rules may be gone (a reboot): put them back
        from .client import Client

        # The long-poll has a connection of its own: it is parked most of the time.
        self.poll_client = Client(client.master, client.token, ca_file=client.ca_file)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.doc = None
        self.revision = None
        self.software_thread = None
        self.passes = 0
        self.relay = None                   # the partitions' mail relay (slapnode/mail/)
        self.relay_doc = None               # the desired state its senders were taken from
        self.relay_retry = 0.0
        from .deploy.warm import Warmer

        self.warmer = Warmer(config, self.instances.isolation, self.instances.lock, self.say)
        self.warm_doc = None                # the desired state the warm partitions follow
        self.availability = None            # the volunteer's policy now (what to report)
        self.availability_sent = None
        self.policy = None
        if policy_watch:
            from .volunteer import PolicyWatch

            try:
                self.policy = PolicyWatch(config, config_path, on_change=self._availability)
            except OSError as exc:
                self.say(f"the volunteer's policy is not enforced: no cgroup for the partitions "
                         f"({exc}); run the agent as root on a machine with cgroups")

    def _availability(self, availability):
        self.availability = availability
        if availability["state"] != (self.availability_sent or {}).get("state"):
            self.say(f"partitions {availability['state']}"
                     + (f": {availability['reason']}" if availability["reason"] else ""))
        self.wake.set()

    def _report_availability(self, doc):
        """Tell the master what the node can do now; while frozen or paused, each of its
        instances is reported ``frozen`` with the reason (nothing runs to say otherwise)."""
        availability = self.availability
        if availability is None or availability == self.availability_sent:
            return
        held = availability["state"] in ("frozen", "paused")
        instances = []
        if held and doc is not None:
            local = self.instances.local.get()
            for item in doc.get("partitions", []):
                instance = item.get("instance")
                kept = local.get(item["reference"]) or {}
                if instance and kept.get("state") == "started":
                    instances.append({"partition": item["reference"], "instance_id": instance["id"],
                                      "status": InstanceStatus.FROZEN,
                                      "reason": f"frozen: {availability['reason']}"})
        try:
            self.client.report(instances=instances, availability=availability)
        except MasterError:
            return                      # next time: the poller says when the master is back
        self.availability_sent = availability
        if not held:
            self.instances.last_reports = {}    # thawed: every status is reported again
            self.instances.after_freeze = True

    def handle_signals(self):
        """SIGTERM and Ctrl-C (SIGINT) stop the daemon at its next turn, never by an
        exception raised wherever its main thread happens to be; a second Ctrl-C
        interrupts at once. SIGUSR1 prints every thread's stack to stderr (where a
        daemon that does not stop is stuck). Call from the main thread."""
        import faulthandler
        import signal

        def interrupt(signum, frame):
            if self.stopping.is_set():
                signal.default_int_handler(signum, frame)
            self.stop()
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, interrupt)
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    def stop(self):
        """Stop at the next turn. Only sets events: safe in a signal handler (the rest of
        the stop, which waits and writes, runs at the end of ``run``)."""
        self.stopping.set()
        self.software.stop()            # a long build must not hold the daemon's exit
        self.wake.set()

    def _poller(self):
        delay, outage = 1.0, None
        while not self.stopping.is_set():
            try:
                doc = self.poll_client.desired_state(after=self.revision,
                                                wait=self.poll_wait if self.revision is not None else 0)
                delay = 1.0
            except MasterError as exc:
                if outage is None:
                    outage = time.monotonic()
                    self.say(f"master unreachable ({exc}); retrying with backoff, "
                             "instances keep running")
                self.stopping.wait(retry_delay(delay))
                delay = min(delay * 2, 60.0)
                continue
            if outage is not None:
                self.say(f"master reachable again after {time.monotonic() - outage:.0f} s")
                outage = None
            if doc.get("changed", True) and doc.get("revision") != self.revision:
                trace.mark(f"desired state {doc.get('revision')}")
                self.doc, self.revision = doc, doc["revision"]
                self.wake.set()

    def _software(self, doc):
        news = False
        try:
            news = any(r.status == "error" or (r.status == "available" and r.how != "up to date")
                       or r.status == "destroyed" for r in self.software.run(doc))
        finally:
            if news:                    # built (or failed) releases change their partitions
                self.wake.set()

    def run(self):
        if self.policy is not None:
            self.policy.start()
        poller = threading.Thread(target=self._poller, daemon=True)
        poller.start()
        if self.client is not None:     # the first deployment does not wait on its import
            threading.Thread(target=certificate.preload, name="preload", daemon=True).start()
        try:
            self._loop()
        finally:                    # stopped, or interrupted (Ctrl-C): builds in flight are
            self.stop()             # told to stop and waited for, so none outlives the daemon
            self.say("stopping (Ctrl-C again to stop at once)")
            if self.policy is not None:
                self.policy.stop()
            if self.software_thread is not None:
                self.software_thread.join(30)
            # free partitions kept warm hold nothing: they do not outlive the agent
            self.warmer.cool_all(self.instances.local, parts_of(self.config))
            if self.relay is not None:
                self.relay.stop()
            zygote.shared().close()

    def _loop(self):
        last_doc = None
        next_build = None
        settle = None           # seconds to the next pass while an instance is deploying
        checked_software, checked_at = None, 0.0
        while not self.stopping.is_set():
            timeout = self.health_every if settle is None else settle
            if next_build is not None:
                timeout = max(0.0, min(timeout, next_build - time.time()))
            self.wake.wait(timeout)
            self.wake.clear()
            if self.stopping.is_set():
                break
            doc = self.doc
            if doc is None:
                continue
            pending, next_build = self._software_pending(doc)
            if self.software_thread is None or not self.software_thread.is_alive():
                # Releases are looked at again when what is supplied changes, when one
                # waits to be built, and every SOFTWARE_RECHECK seconds; not on every
                # request (expanding every profile is the software user's work).
                key = software_key(doc)
                if pending or key != checked_software or \
                        time.monotonic() - checked_at > SOFTWARE_RECHECK:
                    checked_software, checked_at = key, time.monotonic()
                    self.software_thread = threading.Thread(target=self._software, args=(doc,),
                                                            daemon=True)
                    self.software_thread.start()
            self._report_availability(doc)
            if self.policy is not None and not self.policy.running:
                continue        # frozen or paused: nothing may run inside the partitions now
            self._mail(doc)         # before: a service may send as soon as it starts
            outcomes = self.instances.run(doc, only_changed_reports=doc is last_doc,
                                          newer=lambda: self.doc)
            self._warm(doc, outcomes)
            if doc is not last_doc:
                settle = None   # a new desired state: its requests get the quick checks
            settle = settle_delay(settle, any(o.status == InstanceStatus.DEPLOYING
                                              for o in outcomes or ()), self.health_every)
            self.passes += 1
            last_doc = doc

    def _warm(self, doc, outcomes):
        """Keep the next free partitions started (``deploy/warm.py``): after a new desired
        state, or a pass that emptied a partition; never while the owner holds them."""
        emptied = [o.reference for o in outcomes if o.kind == "destroy"]
        self.warmer.cooled(emptied)         # destroy stopped their containers
        if doc is self.warm_doc and not emptied:
            return
        self.warm_doc = doc
        allowed = self.availability is None or self.availability["state"] == "running"
        self.warmer.update(doc, self.instances.local, parts_of(self.config), allowed)

    def _mail(self, doc):
        """The partitions' mail relay: started with the first pass, then told, at each new
        desired state, which partitions hold an instance, and its address. One that cannot listen is tried
        again a minute later, and said once."""
        from . import nodeconfig
        from .mail import rules

        if not nodeconfig.relays_mail(self.config) or \
                (self.relay is not None and doc is self.relay_doc):
            return                      # (the same desired state: the same senders)
        if self.relay is None:
            if time.monotonic() < self.relay_retry:
                return
            from .mail.relay import Relay

            relay = Relay(self.config, self.client, self.say)
            try:
                relay.start()
            except OSError as exc:
                if not self.relay_retry:
                    self.say(f"the partitions' mail relay is not running: port "
                             f"{self.config.mail_port} of the bridge's gateway is not free "
                             f"({exc.strerror}); free it or set mail_port in [mail]")
                self.relay_retry = time.monotonic() + 60
                return
            self.relay = relay
            self.say(f"the partitions' mail relay listens on port {self.config.mail_port} of "
                     "the bridge's gateway")
        self.relay.update(rules.senders(doc, parts_of(self.config)), doc.get("computer", ""))
        self.relay_doc = doc

    def _software_pending(self, doc):
        """(a supplied release is unbuilt and may be tried now, when the next one may be)."""
        now = time.time()
        pending, next_try = False, None
        for supply in doc.get("software", []):
            if supply["state"] != "available" or engine.completed_digest(
                    software_dir(self.config.software_root, supply["url"])) is not None:
                continue
            failure = self.software.failure(supply["url"])
            if failure is None or failure[1] <= now:
                pending = True
            else:
                next_try = failure[1] if next_try is None else min(next_try, failure[1])
        return pending, next_try


def software_key(doc):
    """What the software pass depends on in a desired state. Pure."""
    return json.dumps([doc.get("trusted_builder"),
                       sorted((s["url"], s["state"]) for s in doc.get("software", []))])


def settle_delay(previous, deploying, ceiling, first=0.25):
    """The wait before the next pass: while an instance is deploying (its promises not
    yet kept), 0.25 s, then twice as long each pass up to the health checks' period, so
    that a service that takes a moment is seen ready within a moment; None (the
    period) when nothing is deploying. Pure."""
    if not deploying:
        return None
    return first if previous is None else min(ceiling, previous * 2)


def retry_delay(delay, rand=random.random):
    """The wait before reconnecting: ``delay`` with jitter (0.5 to 1.5 times). Pure."""
    return delay * (0.5 + rand())

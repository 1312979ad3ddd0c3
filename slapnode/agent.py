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
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import usage
from .deploy import isolation as isolation_mod
from .deploy import promises, supervisor
from .deploy.partition import Partition, inputs_hash, parts_of
from .errors import MasterError, SlapnodeError
from .software import engine, software_dir
from .states import DESTROYED, STARTED, STOPPED, InstanceStatus

PARALLEL_PARTITIONS = 8
FATAL_RETRY_FIRST = 10.0        # a crash loop is retried after 10 s, 20 s, … at most 10 min
FATAL_RETRY_MAX = 600.0


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


def status_of(requested, programs, promise_results, running):
    """(status, reason) from what is observed. Pure."""
    if requested == STOPPED:
        return (InstanceStatus.STOPPED, "") if not running else (InstanceStatus.DEPLOYING, "stopping")
    failed = {n: d for n, (state, d) in programs.items() if state in supervisor.FAILED_STATES}
    if failed:
        name, description = sorted(failed.items())[0]
        return InstanceStatus.ERROR, f"service {name} keeps failing ({description or 'exited'})"
    if not running or any(state not in ("RUNNING", "STARTING") for state, _ in programs.values()):
        return InstanceStatus.DEPLOYING, "starting services"
    broken = [p for p in promise_results if not p["ok"]]
    if broken:
        return InstanceStatus.DEPLOYING, f"promise {broken[0]['name']}: {broken[0]['message']}"
    # A service still in its first second counts once the promises vouch for it.
    if not promise_results and any(state != "RUNNING" for state, _ in programs.values()):
        return InstanceStatus.DEPLOYING, "starting services"
    return InstanceStatus.READY, ""


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
    def __init__(self, config, client=None, say=None, parallel=PARALLEL_PARTITIONS):
        self.config = config
        self.client = client
        self.say = say or (lambda message: None)
        self.parallel = parallel
        self.isolation = isolation_mod.isolation_for(config)
        self.local = LocalState(config.state_dir)
        self.last_reports = {}
        self.promise_cache = {}         # (partition, promise) -> (checked at, result)

    def software_digests(self, doc):
        urls = {p["instance"]["software"] for p in doc.get("partitions", []) if p.get("instance")}
        return {url: engine.completed_digest(software_dir(self.config.software_root, url))
                for url in urls}

    def run(self, doc, only_changed_reports=False):
        parts = parts_of(self.config)
        actions = plan(doc, self.local.get(), self.software_digests(doc))
        outcomes = []
        with concurrent.futures.ThreadPoolExecutor(max(1, self.parallel)) as pool:
            futures = [pool.submit(self._do, action, parts.get(action.reference))
                       for action in actions]
            for future in concurrent.futures.as_completed(futures):
                outcomes.append(future.result())
        by_uid = usage.processes_by_uid()           # one scan of /proc for the whole pass
        for outcome in outcomes:
            if outcome.part is not None and "promises" in outcome.report:
                outcome.report["usage"] = usage.partition_usage(outcome.part, by_uid)
        self._report(outcomes, only_changed_reports)
        return outcomes

    # -- one partition ----------------------------------------------------------------
    def _do(self, action, part):
        started = time.monotonic()
        outcome = Outcome(action.reference, action.kind)
        if part is None:
            outcome.status, outcome.reason = InstanceStatus.ERROR, "partition not formatted"
            return self._finish(outcome, action, started)
        partition = Partition(self.config, part, self.isolation)
        try:
            if action.kind == "destroy":
                partition.destroy()
                self.local.set(action.reference, None)
                outcome.status = InstanceStatus.DESTROYED
            elif action.kind == "wait":
                outcome.status, outcome.reason = InstanceStatus.DEPLOYING, "waiting for its software release to be built"
            else:
                instance = action.instance
                redeployed = False
                if action.kind == "deploy":
                    redeployed = partition.deploy(instance)
                    self.local.set(action.reference, {"instance_id": instance["id"],
                                                      "hash": action.inputs, "state": ""})
                    self._publish_early(partition, action)
                wanted = instance["state"]
                here = self.local.get().get(action.reference, {})
                retry = {}
                if wanted == STARTED:
                    programs = partition.programs()
                    retry = self._fatal_backoff(programs, here, action.kind == "deploy")
                    if action.kind != "check" or retry.get("now") or not self._healthy(programs):
                        partition.start(retry_fatal=retry.get("now", False),
                                        restart=redeployed)
                elif here.get("state") != STOPPED or action.kind == "deploy":
                    partition.stop()
                self.local.set(action.reference, {**here, "instance_id": instance["id"],
                                                  "hash": action.inputs, "state": wanted,
                                                  "fatal": retry.get("fatal", 0),
                                                  "retry_at": retry.get("retry_at", 0)})
                self._observe(partition, instance, outcome)
        except SlapnodeError as exc:
            outcome.status, outcome.reason = InstanceStatus.ERROR, str(exc)
        except Exception as exc:        # keep the other partitions going; say what broke
            outcome.status, outcome.reason = InstanceStatus.ERROR, f"{type(exc).__name__}: {exc}"
        return self._finish(outcome, action, started)

    @staticmethod
    def _healthy(programs):
        """Supervisord up and every service running or on its way: nothing to start."""
        return bool(programs) and all(state in ("RUNNING", "STARTING", "BACKOFF", "FATAL")
                                      for state, _ in programs.values())

    @staticmethod
    def _fatal_backoff(programs, here, fresh):
        """Crash loops are retried with capped exponential backoff, never given up."""
        if fresh:
            return {"now": True}
        fatal = [n for n, (state, _) in programs.items() if state == "FATAL"]
        if not fatal:
            return {"fatal": 0, "retry_at": 0}
        count = here.get("fatal", 0)
        if time.time() < here.get("retry_at", 0):
            return {"now": False, "fatal": count, "retry_at": here["retry_at"]}
        delay = min(FATAL_RETRY_FIRST * 2 ** count, FATAL_RETRY_MAX)
        return {"now": count > 0, "fatal": count + 1, "retry_at": time.time() + delay}

    def _publish_early(self, partition, action):
        """Connection parameters reach the master as soon as they are published."""
        if self.client is None:
            return
        own, _ = partition.connection()
        if own:
            try:
                self.client.report(instances=[{"partition": action.reference,
                                               "instance_id": action.instance["id"],
                                               "connection": own}])
            except MasterError:
                pass

    def _promises(self, partition, fresh):
        """Run the partition's promises. A passing promise is re-run only once its
        ``interval`` has passed (health checks); a failing one, and any after a
        deployment or a start, is run now."""
        now = time.monotonic()
        results = []
        for promise in promises.declared(partition.root):
            key = (partition.part.reference, promise.get("name"))
            last = self.promise_cache.get(key)
            if not fresh and last and last[1]["ok"] and now - last[0] < promise.get("interval", 60):
                results.append(last[1])
                continue
            result = promises.run(promise, partition.part.uid, partition.part.gid,
                                  str(partition.root))
            self.promise_cache[key] = (now, result)
            results.append(result)
        return results

    def _observe(self, partition, instance, outcome, wait=3.0):
        """Status from programs and promises, giving fresh services a moment."""
        deadline = time.monotonic() + wait
        while True:
            programs = partition.programs()
            running = bool(programs) or supervisor.alive(partition.root)
            results = (self._promises(partition, fresh=outcome.kind != "check")
                       if instance["state"] == STARTED and running else [])
            status, reason = status_of(instance["state"], programs, results, running)
            if status != InstanceStatus.DEPLOYING or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        own, shared = partition.connection()
        outcome.status, outcome.reason = status, reason
        outcome.report = {"connection": own, "promises": results}
        outcome.part = partition.part
        outcome.shared = [{"instance_id": sid, "connection": values, "status": InstanceStatus.READY}
                          for sid, values in shared.items()]

    def _finish(self, outcome, action, started):
        outcome.seconds = time.monotonic() - started
        if action.instance is not None:
            outcome.report.setdefault("connection", None)
            outcome.report["instance_id"] = action.instance["id"]
        self.say(f"{outcome.reference}: {action.kind} -> {outcome.status}"
                 f"{' (' + outcome.reason + ')' if outcome.reason else ''} [{outcome.seconds:.2f} s]")
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
            item["usage"] = outcome.report.get("usage")     # not a reason to report again
            if only_changed and self.last_reports.get(outcome.reference) == key:
                continue
            self.last_reports[outcome.reference] = key
            items.append(item)
            shared += outcome.shared
        if items or shared:
            try:
                self.client.report(instances=items, shared=shared)
            except MasterError as exc:
                self.say(f"report failed: {exc}")
                self.last_reports.clear()


class Daemon:
    """``node run``: long-poll, reconcile, report, keep going."""

    def __init__(self, config, client, say=None, poll_wait=30.0, health_every=5.0):
        from .software.supply import SoftwarePass

        self.config = config
        self.client = client
        self.say = say or (lambda message: None)
        self.poll_wait = poll_wait
        self.health_every = health_every
        self.software = SoftwarePass(config, client, self.say)
        self.instances = InstancePass(config, client, self.say)
        from .client import Client

        # The long-poll has a connection of its own: it is parked most of the time.
        self.poll_client = Client(client.master, client.token)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.doc = None
        self.revision = None
        self.software_thread = None

    def stop(self):
        self.stopping.set()
        self.wake.set()

    def _poller(self):
        delay = 1.0
        while not self.stopping.is_set():
            try:
                doc = self.poll_client.desired_state(after=self.revision,
                                                wait=self.poll_wait if self.revision is not None else 0)
                delay = 1.0
            except MasterError as exc:
                self.say(f"master unreachable ({exc}); retrying in {delay:.0f} s")
                self.stopping.wait(delay * (0.5 + random.random()))
                delay = min(delay * 2, 60.0)
                continue
            if doc.get("changed", True) and doc.get("revision") != self.revision:
                self.doc, self.revision = doc, doc["revision"]
                self.wake.set()

    def _software(self, doc):
        try:
            self.software.run(doc)
        finally:
            self.wake.set()             # built releases unblock their partitions

    def run(self):
        poller = threading.Thread(target=self._poller, daemon=True)
        poller.start()
        last_doc = None
        while not self.stopping.is_set():
            self.wake.wait(self.health_every)
            self.wake.clear()
            if self.stopping.is_set():
                break
            doc = self.doc
            if doc is None:
                continue
            if self.software_thread is None or not self.software_thread.is_alive():
                if doc is not last_doc or self._software_pending(doc):
                    self.software_thread = threading.Thread(target=self._software, args=(doc,),
                                                            daemon=True)
                    self.software_thread.start()
            self.instances.run(doc, only_changed_reports=doc is last_doc)
            last_doc = doc

    def _software_pending(self, doc):
        return any(s["state"] == "available" and engine.completed_digest(
            software_dir(self.config.software_root, s["url"])) is None
            for s in doc.get("software", []))

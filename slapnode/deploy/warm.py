"""Warm partitions: the next free partitions kept started, ready to deploy into.

The master gives a new instance the first free partition of a node in the order
the node reported them (``master/allocation.py``: by partition id). The agent
keeps the container and supervisord of the next ``warm_partitions`` free ones
(``[node]``, 2 by default) running, with the warm deployer loaded
(``deploy/deployer.py``): a request that lands there finds its partition
started, and what is left is the instance's own work. Container and supervisord
start (about 0.4 s) leave the request's path.

A warm partition is an ordinary partition without an instance: its container
has the partition's addresses, limits and user, its supervisord has no program.
It is stopped when it is no longer among the next free ones, and nothing is
kept warm while the volunteer's policy holds the partitions (nor with
``warm_partitions = 0``). Cost: about 25 MB of memory each (docs/instances.md).

``choose`` is the pure decision; ``Warmer`` applies it, one partition at a time,
under the same per-partition lock the instance pass takes.
"""

import threading


def choose(doc, local, count):
    """References of the first ``count`` free partitions in the master's order (the
    desired state lists them so), leaving out those the node still holds something
    in (``local``: a destroy not yet done). Pure."""
    chosen = []
    for item in doc.get("partitions", []):
        if len(chosen) >= count:
            break
        if item.get("instance") is None and not local.get(item["reference"]):
            chosen.append(item["reference"])
    return chosen


def free(doc, reference):
    """True when the desired state gives ``reference`` no instance. Pure."""
    return any(item["reference"] == reference and item.get("instance") is None
               for item in doc.get("partitions", []))


class Warmer:
    """Keeps ``choose``'s partitions started, and stops those it started that are no
    longer chosen and still free. ``lock(reference)`` is the instance pass's lock of
    that partition: a request that lands on a partition while it is being warmed
    waits for it, then finds it started."""

    def __init__(self, config, isolation, lock, say=None):
        self.config = config
        self.isolation = isolation
        self.lock = lock
        self.say = say or (lambda message: None)
        self.warm = set()
        self.scanned = False
        self.thread = None
        self.pending = None
        self.guard = threading.Lock()

    def update(self, doc, local, parts, allowed=True):
        """Do the work in the background, one update at a time; while one runs, the
        newest call waits and runs next. ``local``: the agent's live ``LocalState``,
        read again under each partition's lock (the desired state may be stale: a
        partition the pass holds an instance in is never stopped)."""
        with self.guard:
            self.pending = (doc, local, parts, allowed)
            if self.thread is not None and self.thread.is_alive():
                return
            self.thread = threading.Thread(target=self._drain, daemon=True, name="slapnode-warm")
            self.thread.start()

    def cooled(self, references):
        """These partitions were emptied (a destroy stops their container): not warm."""
        with self.guard:
            self.warm.difference_update(references)

    def _drain(self):
        while True:
            with self.guard:
                args, self.pending = self.pending, None
                if args is None:
                    self.thread = None
                    return
            self.apply(*args)

    def apply(self, doc, local, parts, allowed=True):
        from .partition import Partition

        held = local.get()
        wanted = set(choose(doc, held, self.config.warm_partitions if allowed else 0))
        if not self.scanned:        # after a restart: what an earlier agent left warm
            self.scanned = True
            for reference, part in parts.items():
                if reference not in wanted and free(doc, reference) and \
                        not held.get(reference) and self.isolation.running(part):
                    self.warm.add(reference)
        for reference in sorted(self.warm - wanted):
            part = parts.get(reference)
            with self.lock(reference):
                if part is not None and free(doc, reference) and not local.get_one(reference):
                    self.isolation.stop(part, graceful=False)
            self.warm.discard(reference)
        for reference in sorted(wanted - self.warm):
            part = parts.get(reference)
            if part is None:
                continue
            with self.lock(reference):
                if local.get_one(reference):
                    continue            # taken meanwhile: the pass started it its own way
                try:
                    partition = Partition(self.config, part, self.isolation)
                    partition.write_supervisor_conf()
                    self.isolation.ensure_running(part, services=True)
                    # warm once its deployer answers (the lock is held until then)
                    partition.wait_warm()
                except Exception as exc:        # noqa: BLE001 - said, then left cold
                    self.say(f"{reference}: not kept warm ({exc})")
                    continue
            self.warm.add(reference)

    def cool_all(self, local, parts):
        """Stop every warm partition that is still free (the agent is leaving)."""
        if self.thread is not None:
            self.thread.join(30)
        for reference in sorted(self.warm):
            part = parts.get(reference)
            with self.lock(reference):
                if part is not None and not local.get_one(reference):
                    self.isolation.stop(part, graceful=False)
        self.warm.clear()

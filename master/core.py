"""The master service object: its database, its revision board, its transactions.

Owns the write transaction as the rest of the master sees it: run a function
in one transaction, retry it when a concurrent writer won a race (a unique
constraint fired, PostgreSQL reported a serialization failure), bump the
revision of every computer whose desired state it changed, and after the
commit wake the long-polls waiting on those computers and instances — in this
process, and (on PostgreSQL) in every other process serving the same database,
through the notices ``fanout`` adds to the transaction. Caches to forget (a
revoked token, a re-enrolled computer) are told the same way (``forget``).
"""

import time
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from .db import Database
from .fanout import Fanout
from .models import Computer
from .notify import RevisionBoard

RETRIES = 8


ANY_INSTANCE = "instances"      # bumped whenever any instance changes (the web's live lists)


def computer_key(computer_id):
    return ("computer", computer_id)


def instance_key(instance_id):
    return ("instance", instance_id)


def touch_computer(session, computer_id):
    """Mark ``computer_id``'s desired state as changed in this transaction."""
    session.info.setdefault("computers", set()).add(computer_id)


def touch_instance(session, instance_id):
    """Mark an instance as changed, to wake whoever waits on it."""
    session.info.setdefault("instances", set()).add(instance_id)


class Master:
    def __init__(self, url, releases_dir=None, data_dir=None, naming=None):
        from .names import Naming

        self.db = Database(url)
        self.board = RevisionBoard()
        self.releases_dir = releases_dir
        self.cache_dir = Path(data_dir) / "cache" if data_dir else None
        self.data_dir = Path(data_dir) if data_dir else None
        self.naming = naming or Naming()
        self.placements_changed = []        # callbacks after a commit that moved instances
        self.forgetters = []                # callbacks(kind, value): a cache entry to drop
        self.fanout = Fanout.for_url(url, self._notice, self._missed)
        from .liveness import Liveness

        self.liveness = Liveness(self)          # nodes' heartbeats; lost nodes

    def seed_revisions(self):
        with self.db.read() as session:
            for cid, revision in session.execute(
                    select(Computer.id, Computer.revision)):
                self.board.seed(computer_key(cid), revision)

    def read(self):
        return self.db.read()

    def write(self, fn, *args, **kwargs):
        """Run ``fn(session, *args, **kwargs)`` in one write transaction and return its result."""
        for attempt in range(RETRIES):
            try:
                with self.db.write() as session:
                    result = fn(session, *args, **kwargs)
                    session.flush()
                    bumped = self._bump(session)
                    instances = session.info.get("instances", set())
                    if self.fanout is not None and (bumped or instances):
                        self.fanout.add(session, [("c", cid, revision) for cid, revision in bumped]
                                        + [("i", iid) for iid in sorted(instances)])
                break
            except (IntegrityError, OperationalError) as exc:
                if attempt == RETRIES - 1 or not _retryable(exc):
                    raise
                time.sleep(0.002 * (attempt + 1))
        for cid, revision in bumped:
            self.board.publish(computer_key(cid), revision)
        if bumped:
            for callback in self.placements_changed:
                callback()
        for iid in instances:
            self.board.bump(instance_key(iid))
        if instances:
            self.board.bump(ANY_INSTANCE)
        return result

    def forget(self, kind, value):
        """Drop a cache entry here and in every other process: ``token`` (a digest),
        ``user`` (an id), ``computer`` (an id)."""
        for callback in self.forgetters:
            callback(kind, str(value))
        if self.fanout is not None:
            self.fanout.send(self.db.write_engine, [("forget", kind, value)])

    def _notice(self, words):
        """What another process committed (master/fanout.py)."""
        kind = words[0]
        if kind == "c":
            self.board.publish(computer_key(int(words[1])), int(words[2]))
            for callback in self.placements_changed:
                callback()
        elif kind == "i":
            self.board.bump(instance_key(int(words[1])))
            self.board.bump(ANY_INSTANCE)
        elif kind == "forget":
            for callback in self.forgetters:
                callback(words[1], words[2])

    def _missed(self):
        """The notices of a while may be lost: read every revision again, wake every
        waiter on an instance, forget every cached token."""
        with self.db.read() as session:
            for cid, revision in session.execute(select(Computer.id, Computer.revision)):
                self.board.publish(computer_key(cid), revision)
        self.board.bump_waited(lambda key: key == ANY_INSTANCE or key[0] == "instance")
        for callback in self.placements_changed:
            callback()
        for callback in self.forgetters:
            callback("all", "")

    @staticmethod
    def _bump(session):
        computers = session.info.get("computers")
        if not computers:
            return []
        rows = session.execute(
            update(Computer)
            .where(Computer.id.in_(sorted(computers)))
            .values(revision=Computer.revision + 1)
            .returning(Computer.id, Computer.revision))
        return list(rows)

    def dispose(self):
        if self.fanout is not None:
            self.fanout.stop()
        self.db.dispose()


def _retryable(exc):
    if isinstance(exc, IntegrityError):
        return True
    text = str(getattr(exc, "orig", exc)).lower()
    return any(word in text for word in ("could not serialize", "deadlock", "database is locked"))

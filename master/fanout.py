"""Changes told to every worker of the master: PostgreSQL's LISTEN/NOTIFY.

Owns what one master process tells the others sharing its database (several
``--workers``, or several machines behind a proxy): a computer's new revision, an
instance that changed, a token or credential to forget. A writer adds its notices to
its transaction (``pg_notify``: delivered at commit, never for a rollback); each
process listens on a connection of its own, in a thread, and applies what others
sent to its revision board and caches. A notice lost while the connection was down
costs latency, not correctness: after a reconnect every computer's revision is read
again and every waiter woken, and long-polls re-check after their bounded wait.

SQLite has one process and needs none of this (``Fanout.for_url`` gives None).
"""

import logging
import os
import threading

from sqlalchemy import text

CHANNEL = "slapnode"
MAX_PAYLOAD = 7000          # PostgreSQL's limit is 8000 bytes a notice
log = logging.getLogger("slapnode.master")


def encode(notices, origin):
    """Payloads for ``notices`` ([(kind, args...)]), each under MAX_PAYLOAD. Pure."""
    payloads, lines = [], []
    size = 0
    for notice in notices:
        line = " ".join(str(part) for part in notice)
        if lines and size + len(line) + 1 > MAX_PAYLOAD:
            payloads.append(f"{origin}\n" + "\n".join(lines))
            lines, size = [], 0
        lines.append(line)
        size += len(line) + 1
    if lines:
        payloads.append(f"{origin}\n" + "\n".join(lines))
    return payloads


def decode(payload):
    """(origin, [notice as a list of words]) of one payload. Pure."""
    origin, _, body = payload.partition("\n")
    return origin, [line.split(" ") for line in body.splitlines() if line]


class Fanout:
    """One process's end: ``add`` in a write transaction, ``start`` a listener that
    calls ``apply(words)`` for each notice another process sent, and
    ``on_reconnect()`` after the listener had to connect again."""

    def __init__(self, url, apply, on_reconnect):
        self.url = url
        self.apply = apply
        self.on_reconnect = on_reconnect
        self.origin = f"{os.uname().nodename}:{os.getpid()}:{id(self):x}"
        self.stopping = threading.Event()
        self.thread = None
        self.listening = threading.Event()

    @staticmethod
    def for_url(url, apply, on_reconnect):
        return Fanout(url, apply, on_reconnect) if str(url).startswith("postgresql") else None

    def add(self, session, notices):
        """Notices go out with the transaction of ``session`` (at its commit only)."""
        for payload in encode(notices, self.origin):
            session.execute(text("SELECT pg_notify(:channel, :payload)"),
                            {"channel": CHANNEL, "payload": payload})

    def send(self, engine, notices):
        """Notices sent now, outside any transaction of the caller's."""
        with engine.begin() as connection:
            for payload in encode(notices, self.origin):
                connection.execute(text("SELECT pg_notify(:channel, :payload)"),
                                   {"channel": CHANNEL, "payload": payload})

    def start(self):
        self.thread = threading.Thread(target=self._run, name="fanout", daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(3)

    def _connect(self):
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(self.url)
        connection = psycopg.connect(
            host=url.host, port=url.port, user=url.username, password=url.password,
            dbname=url.database, autocommit=True, connect_timeout=5,
            **{k: v for k, v in url.query.items() if isinstance(v, str)})
        connection.execute(f"LISTEN {CHANNEL}")
        return connection

    def _run(self):
        delay, said, connected_before = 0.5, False, False
        while not self.stopping.is_set():
            try:
                connection = self._connect()
            except Exception as exc:        # the database is away: try again, said once
                if not said:
                    log.warning("cannot listen for the other workers' changes (%s); "
                                "retrying", exc)
                    said = True
                self.stopping.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay, said = 0.5, False
            if connected_before:
                self.on_reconnect()     # what was said while we were away is read again
            connected_before = True
            self.listening.set()
            try:
                with connection:
                    while not self.stopping.is_set():
                        for notice in connection.notifies(timeout=1.0):
                            self._received(notice.payload)
            except Exception as exc:
                if not self.stopping.is_set():
                    log.warning("lost the database connection that listens for the other "
                                "workers' changes (%s); reconnecting", exc)
                    self.stopping.wait(0.1)

    def _received(self, payload):
        origin, notices = decode(payload)
        if origin == self.origin:
            return                      # our own: applied already, at commit
        for words in notices:
            try:
                self.apply(words)
            except Exception:           # one bad notice must not stop the listener
                log.exception("a notice from another worker could not be applied")

"""In-process change notification for long-polls.

Owns the "revision board": the newest known revision of each key (a computer's
desired state, an instance's record) and the waiters parked on them. Waiting
costs an ``asyncio.Event`` and holds no database connection. Writers call
:meth:`RevisionBoard.publish` from any thread after their transaction commits.

The board is per process (uvicorn, one event loop, a thread pool for database
work); with several workers on PostgreSQL each worker's board also hears what the
others committed (master/fanout.py). A long-poll re-checks after its bounded
wait, so a missed wake-up costs latency, never correctness.
"""

import asyncio
import threading


class RevisionBoard:
    def __init__(self):
        self._revisions = {}
        self._events = {}
        self._futures = {}          # key -> futures of the lean long-poll (master/longpoll.py)
        self._lock = threading.Lock()
        self.loop = None
        self.closing = False
        self.parked = 0             # long-polls waiting right now (shown by /health)

    def attach(self, loop):
        self.loop = loop

    def get(self, key):
        return self._revisions.get(key)

    def seed(self, key, revision):
        """Record a revision read from the database, never going backwards."""
        with self._lock:
            if revision > self._revisions.get(key, -1):
                self._revisions[key] = revision

    def publish(self, key, revision):
        """Record a committed change and wake whoever waits on ``key``."""
        self.seed(key, revision)
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._wake, key)

    def bump(self, key):
        """Count one more change of ``key`` (for keys with no stored revision)."""
        with self._lock:
            self._revisions[key] = self._revisions.get(key, 0) + 1
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._wake, key)

    def bump_waited(self, which):
        """Count one more change of every key someone waits on that ``which(key)``
        accepts (after notices may have been lost)."""
        for key in set(self._events) | set(self._futures):
            if which(key):
                self.bump(key)

    def close(self):
        """The master is stopping: every parked waiter answers now (unchanged),
        instead of being cancelled mid-wait when the graceful shutdown runs out."""
        self.closing = True
        for key in set(self._events) | set(self._futures):
            self._wake(key)

    def future(self, key):
        """A future resolved at the next change of ``key`` (on the event loop; give it
        back with ``drop`` if it is abandoned)."""
        future = asyncio.get_running_loop().create_future()
        self._futures.setdefault(key, set()).add(future)
        return future

    def drop(self, key, future):
        waiting = self._futures.get(key)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._futures[key]

    def _wake(self, key):
        event = self._events.pop(key, None)
        if event is not None:
            event.set()
        for future in self._futures.pop(key, ()):
            if not future.done():
                future.set_result(None)

    async def wait_past(self, key, revision, timeout):
        """Wait until ``key`` is past ``revision`` or ``timeout`` seconds pass.

        Returns the revision known at the end (which may still be ``revision``).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            current = self._revisions.get(key, -1)
            remaining = deadline - loop.time()
            if current > revision or remaining <= 0 or self.closing:
                return current
            event = self._events.get(key)
            if event is None:
                event = self._events[key] = asyncio.Event()
            self.parked += 1
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                self.parked -= 1

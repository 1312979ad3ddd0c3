"""Which nodes are alive: their polls as heartbeats, and lost nodes.

Owns the heartbeat: a node's desired-state polls are noted in memory (the long-poll
stays free of writes) and written as ``last_seen`` every few seconds, in one
statement for every node that polled. A node not seen for ``lost_after`` seconds
(``master serve --lost-after``, 300 by default) is marked lost by the worker that
keeps the house, and its instances become ``unreachable``; a lost node that polls
again is back at once (its revision bumps, so it reports everything again).
"""

import asyncio
import logging

from . import computers
from .models import Computer, utcnow

LOST_AFTER = 300.0
CHUNK = 500                     # computers per heartbeat statement
log = logging.getLogger("slapnode.master")


class Liveness:
    def __init__(self, master, lost_after=LOST_AFTER):
        self.master = master
        self.lost_after = lost_after
        self.polled = set()
        self.lost = set()           # ids of the computers known lost
        self.wake = None

    @property
    def every(self):
        """Seconds between two writes of the heartbeats (well under ``lost_after``)."""
        return max(0.2, min(15.0, self.lost_after / 4))

    def saw(self, computer_id):
        """A node polled (called on the event loop, for every poll: no I/O)."""
        self.polled.add(computer_id)
        if computer_id in self.lost and self.wake is not None:
            self.wake.set()         # a lost node is back: said now, not at the next beat

    async def run(self, watch):
        """Write heartbeats until cancelled; with ``watch``, also mark lost nodes."""
        from sqlalchemy import select

        self.wake = asyncio.Event()
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), self.every)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            polled, self.polled = self.polled, set()
            now = utcnow()
            try:
                ids = sorted(polled)
                for start in range(0, len(ids), CHUNK):     # short writes, the loop breathes
                    await asyncio.to_thread(self.master.write, computers.seen,
                                            ids[start:start + CHUNK], now)
                if polled & self.lost:
                    for name in await asyncio.to_thread(self.master.write, computers.back,
                                                        polled & self.lost):
                        log.warning("node %s is back", name)
                if watch:
                    for name in await asyncio.to_thread(self.master.write, computers.mark_lost,
                                                        now, self.lost_after):
                        log.warning("node %s is lost: not seen for %.0f s", name,
                                    self.lost_after)

                def lost_ids():
                    with self.master.read() as session:
                        return set(session.scalars(select(Computer.id).where(
                            Computer.lost_at.is_not(None))))
                self.lost = await asyncio.to_thread(lost_ids)
            except Exception:           # a busy or restarting database: the next beat
                self.polled |= polled
                log.exception("writing the nodes' heartbeats failed")

"""The desired-state long-poll's parked path: a thin ASGI layer in front of the app.

Thousands of nodes spend nearly all their time parked on ``GET
/api/v1/node/desired-state?after=N&wait=S`` with nothing to learn. Through the whole
framework, each parked poll held a request object, its dependency solving, the
middleware's frames and three tasks (the wait, its timeout, a disconnect watcher):
about 30 KB, 150 MB for 5,000 nodes over the workers. Here an unchanged poll of a
known node is parked with one task (watching for the disconnect), one future and a
timer, and answered ``changed: false`` without reaching the framework.

A credential or a revision this worker has not seen yet is looked up in a thread
(with several workers, a node's polls land on any of them). Everything else goes on
to the app unchanged, as it would have: a first poll (no ``after``), a refused
credential (the app says why), bad arguments (the app answers 422), and a poll whose
revision moved (the app builds the document), even after parking. Answers are the
same bytes the app would give.
"""

import asyncio
import functools
import json
import urllib.parse

from .auth import bearer
from .core import computer_key

PATH = "/api/v1/node/desired-state"
MAX_WAIT = 120.0


def parked_query(query_string):
    """(after, wait) of a poll this layer may answer (``wait`` 0: at once), or None (the
    app decides the rest). Pure."""
    try:
        query = dict(urllib.parse.parse_qsl(query_string.decode("latin-1"), strict_parsing=True))
        after, wait = int(query["after"]), float(query.get("wait", "0"))
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    if set(query) - {"after", "wait"} or after < 0 or not 0 <= wait <= MAX_WAIT:
        return None
    return after, wait


class LongPoll:
    def __init__(self, app, master, nodes):
        self.app = app
        self.master = master
        self.nodes = nodes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != PATH:
            return await self.app(scope, receive, send)
        asked = parked_query(scope.get("query_string", b""))
        authorization = next((value for name, value in scope.get("headers") or ()
                              if name == b"authorization"), b"")
        token = bearer(authorization.decode("latin-1"))
        node = self.nodes.cached(token) if asked and token else None
        if asked and token and node is None:        # first seen by this worker
            try:
                node = await asyncio.to_thread(self.nodes.authenticate, self.master.db.read,
                                               token)
            except Exception:       # noqa: BLE001 - refused: the app says why, in its words
                node = None
        if node is None:
            return await self.app(scope, receive, send)
        key = computer_key(node.computer_id)
        current = self.master.board.get(key)
        if current is None:
            from .api.node import revision_of

            current = await asyncio.to_thread(revision_of, self.master, node.computer_id)
        if current > asked[0]:
            return await self.app(scope, receive, send)
        self.master.liveness.saw(node.computer_id)
        if asked[1] == 0:                   # unchanged, and no wait asked: at once
            return await _answer(send, 200, _unchanged(current))
        first = await receive()             # the (empty) body of the GET
        current = await park(self.master.board, key, asked[0], asked[1], receive)
        if current is None:                 # the node went away
            return await _answer(send, 204, b"")
        if current <= asked[0]:
            return await _answer(send, 200, _unchanged(current))

        async def replayed():               # the document is the app's to build
            nonlocal first
            if first is not None:
                message, first = first, None
                return message
            return await receive()
        return await self.app(scope, replayed, send)

async def park(board, key, after, wait, receive):
    """Wait until ``key`` is past revision ``after`` or ``wait`` s passed: the revision
    then, or None if the client went away (``receive`` said so). One task (watching
    for the disconnect), one future and a timer; the endpoint parks the same way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    gone = loop.create_task(_disconnect(receive))
    try:
        while True:
            current = board.get(key)
            remaining = deadline - loop.time()
            if current > after or remaining <= 0 or board.closing:
                return current
            # one future, settled by whichever comes first: a change (the board), the
            # deadline (the timer) or the client leaving (the watcher's end); awaited
            # directly, as asyncio.wait would add a waiter, a set and callbacks per poll
            woken = board.future(key)
            timer = loop.call_later(remaining, _settle, woken)
            left = functools.partial(_settle_on, woken)
            gone.add_done_callback(left)
            board.parked += 1
            try:
                await woken
            finally:
                board.parked -= 1
                timer.cancel()
                gone.remove_done_callback(left)
                board.drop(key, woken)
            if gone.done():
                return None
    finally:
        if not gone.done():
            gone.cancel()


async def _disconnect(receive):
    while (await receive())["type"] != "http.disconnect":
        pass


def _unchanged(revision):
    """The app's answer to an unchanged poll, byte for byte (api/deps.SafeJSONResponse)."""
    return json.dumps({"revision": revision, "changed": False}, separators=(",", ":")).encode()


def _settle(future):
    if not future.done():
        future.set_result(None)


def _settle_on(future, _task):
    _settle(future)


async def _answer(send, status, body):
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

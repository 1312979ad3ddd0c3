"""What every API module needs: the master object, who is calling, and
long-poll waits that end when the caller goes away."""

import asyncio
import json

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from .. import auth, limits, users


class StrictRequest(Request):
    """A request whose JSON body may not hold NaN or Infinity (JSON has neither)."""

    async def json(self):
        if not hasattr(self, "_json"):
            self._json = limits.strict_json(await self.body())
        return self._json


class StrictRoute(APIRoute):
    """Every API route reads its body with StrictRequest."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict(request):
            return await handler(StrictRequest(request.scope, request.receive))
        return strict


class SafeJSONResponse(JSONResponse):
    """JSON out, always: a stored value JSON cannot carry is shown as text rather
    than failing the whole answer (limits.finite)."""

    def render(self, content):
        try:
            return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                              separators=(",", ":")).encode("utf-8")
        except ValueError:
            return super().render(limits.finite(content))


def master_of(request: Request):
    return request.app.state.master


def token_of(request: Request):
    return auth.bearer(request.headers.get("authorization"))


def user_in(session, request):
    """The calling user, authenticated inside the caller's session."""
    return users.authenticate_user(session, token_of(request))


def writer_in(session, request):
    """The calling user, who is about to change something: not a disabled one."""
    principal = user_in(session, request)
    users.require_active(principal)
    return principal


def user_of(request):
    """The calling user, from the token cache (a query only on a miss)."""
    master = master_of(request)
    return request.app.state.user_tokens.authenticate(master.db.read, token_of(request))


def admin_in(session, request):
    principal = user_in(session, request)
    users.require_admin(principal)
    return principal


def node_of(request):
    """The calling node (cached; touches the database only on a cache miss)."""
    master = master_of(request)
    return request.app.state.nodes.authenticate(master.db.read, token_of(request))


async def _disconnected(request):
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request, awaitable):
    """Await ``awaitable``; give up (return None) if the client disconnects first,
    so that a node that went away does not leave a waiter parked."""
    waiter = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, watcher):
            if not task.done():
                task.cancel()
    return waiter.result() if waiter in done else None

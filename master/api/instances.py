"""/api/v1/instances: request, list, show (optionally waiting), change state."""

import asyncio
from datetime import datetime

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from slapnode.states import settled_for

from .. import instances, usage, users
from ..users import aware
from ..core import instance_key
from .bodies import InstanceRequest, StateChange
from .deps import (master_of, SafeJSONResponse, StrictRoute, unless_disconnected, user_in, user_of,
                   writer_in)

router = APIRouter(tags=["instances"], route_class=StrictRoute)

MAX_WAIT = 300.0


@router.post("/instances")
def request_instance(body: InstanceRequest, request: Request):
    user = user_of(request)         # outside the write transaction: it is the hot path
    users.require_active(user)
    master = master_of(request)
    fields = (body.title, body.software, body.type, body.parameters, body.shared, body.node,
              body.state, body.share_with)
    with master.read() as session:  # the schema check takes no write lock
        instances.check_request(session, *fields, version=body.version)

    def run(session):
        instance, changed = instances.request(session, user, *fields, checked=True, group=body.group,
                                              version=body.version, move=body.move)
        return {**instances.view(session, instance, master.naming, owner=user.name),
                "changed": changed}
    return SafeJSONResponse(master.write(run))


@router.get("/instances")
def list_instances(request: Request):
    with master_of(request).read() as session:
        user = user_in(session, request)
        return SafeJSONResponse([instances.view(session, i, master_of(request).naming)
                                 for i in instances.list_for(session, user)])


def _show(request, title, owner):
    with master_of(request).read() as session:
        user = user_in(session, request)
        instance = instances.get(session, user, title, owner)
        return instance.id, instances.view(session, instance, master_of(request).naming)


@router.get("/instance-history/{title:path}")
def instance_history(request: Request, title: str, owner: str | None = Query(None, max_length=64)):
    """Every change to the instance: who, when, what (never a secret's value)."""
    with master_of(request).read() as session:
        return instances.history(session, user_in(session, request), title, owner)


@router.get("/instance-usage/{title:path}")
def instance_usage(request: Request, title: str, owner: str | None = Query(None, max_length=64),
                   resolution: str = Query("hourly", pattern="^(hourly|raw)$"),
                   since: datetime | None = None, until: datetime | None = None):
    """The instance's usage over time: hourly aggregates (13 months) or raw samples (48 h)."""
    with master_of(request).read() as session:
        instance = instances.get(session, user_in(session, request), title, owner)
        return SafeJSONResponse(usage.instance_series(session, instance.id, resolution, aware(since),
                                                      aware(until)))


@router.get("/instances/{title:path}")
async def show_instance(request: Request, title: str,
                        wait: float = Query(0, ge=0, le=MAX_WAIT),
                        owner: str | None = Query(None, max_length=64)):
    """With ``wait``, answer as soon as the instance settles (ready, stopped,
    destroyed or error, as requested) or when ``wait`` seconds have passed."""
    board = master_of(request).board
    instance_id, view = await run_in_threadpool(_show, request, title, owner)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while not settled_for(view["state"], view["status"]) and loop.time() < deadline \
            and not board.closing:
        seen = board.get(instance_key(instance_id)) or 0
        instance_id, view = await run_in_threadpool(_show, request, title, owner)
        if settled_for(view["state"], view["status"]):
            break
        if await unless_disconnected(request, board.wait_past(
                instance_key(instance_id), seen, deadline - loop.time())) is None:
            return Response(status_code=204)      # the caller went away
        instance_id, view = await run_in_threadpool(_show, request, title, owner)
    return view


@router.patch("/instances/{title:path}")
def change_instance(body: StateChange, request: Request, title: str,
                    owner: str | None = Query(None, max_length=64)):
    def run(session):
        user = writer_in(session, request)
        instance, changed = instances.change_state(session, user, title, body.state, owner)
        return {**instances.view(session, instance, master_of(request).naming), "changed": changed}
    return master_of(request).write(run)

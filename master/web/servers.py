"""My Space pages about machines and circles: My Servers (capacity, partitions,
scope, credit, "add a server" with its one-time enrollment command), a server's
monitoring, My Networks and My Groups."""

import urllib.parse

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from .. import allocation, computers, credit, groups, networks, usage, users
from ..errors import ApiError, BadRequest, Forbidden, NotFound
from ..models import Computer
from . import plots, render
from .services import _range, _window, charts

router = APIRouter(include_in_schema=False)


def _mine(session, principal):
    rows = [c for c in computers.list_for(session, principal) if c["owner"] == principal.name]
    earned = {r["computer"]: r for r in credit.for_computers(
        session, session.query(Computer).filter(Computer.owner_id == principal.id).all())}
    for row in rows:
        row["credit"] = earned.get(row["name"], {}).get("credit", "0")
    return rows


def _servers(request, me, status=200, enrollment=None, error=""):
    with render.master_of(request).read() as session:
        rows = _mine(session, me.principal)
    return render.page(request, "servers.html", me=me, status=status, rows=rows,
                       enrollment=enrollment, error=error, scopes=allocation.SCOPES,
                       notice=render.notice_of(request))


@router.get("/servers")
def servers(request: Request):
    return _servers(request, render.need(request))


@router.post("/servers")
async def add_server(request: Request):
    """A one-time enrollment token for a new server, shown once with the command."""
    me, form = await render.posted(request)
    name = (form.get("name") or "").strip()
    scope = form.get("scope") or None
    partitions = (form.get("partitions") or "10").strip()

    def run(session):
        users.require_active(me.principal)
        if not partitions.isdigit() or not 1 <= int(partitions) <= 1000:
            raise BadRequest("partitions: give a whole number from 1 to 1000")
        return computers.create_enrollment_token(session, me.principal, name, scope)
    try:
        token = await run_in_threadpool(render.master_of(request).write, run)
    except ApiError as exc:
        return await run_in_threadpool(_servers, request, me, exc.status, None, exc.message)
    master_url = str(request.base_url).rstrip("/")
    enrollment = {"name": name, "token": token, "days": computers.ENROLLMENT_LIFETIME.days,
                  "command": f"slapnode node register --master {master_url} --token {token} "
                             f"--name {name} --partitions {int(partitions)}"}
    return await run_in_threadpool(_servers, request, me, 201, enrollment)


@router.post("/servers/{name}/scope")
async def set_scope(request: Request, name: str):
    me, form = await render.posted(request)
    friends = [g.strip() for g in (form.get("friends") or "").split(",") if g.strip()]

    def run(session):
        users.require_active(me.principal)
        computers.set_scope(session, me.principal, name, form.get("scope", ""),
                            friends if form.get("scope") == "friends" else None)
    await run_in_threadpool(render.master_of(request).write, run)
    return render.redirect(f"/servers/{urllib.parse.quote(name, safe='')}", "Scope changed.")


@router.get("/servers/{name}")
def server_page(request: Request, name: str):
    me = render.need(request)
    range_name = _range(request)
    since, until, _resolution = _window(range_name)
    with render.master_of(request).read() as session:
        try:
            computer = computers.owned(session, me.principal, name)
        except Forbidden:           # a page of someone else's: as if there were none
            raise NotFound(f"no server {name!r} of yours; see My Servers") from None
        shown = computers.list_for(session, me.principal, name)[0]
        shown["credit"] = credit.for_computers(session, [computer])[0]["credit"]
        series = usage.computer_series(session, computer.id, since, until)
    return render.page(request, "server.html", me=me, computer=shown,
                       charts=charts(series, since, until),
                       range_name=range_name, ranges=list(plots.RANGES), scopes=allocation.SCOPES,
                       notice=render.notice_of(request))


# ---- networks and groups ----------------------------------------------------

CIRCLES = {
    "networks": {"module": networks, "member": "computer", "add": networks.add_computer,
                 "remove": networks.remove_computer, "create": networks.create,
                 "title": "My Networks", "members": "computers"},
    "groups": {"module": groups, "member": "user", "add": groups.add_member,
               "remove": groups.remove_member, "create": groups.create,
               "title": "My Groups", "members": "members"},
}


def _circles(request, me, kind, status=200, error=""):
    spec = CIRCLES[kind]
    with render.master_of(request).read() as session:
        rows = spec["module"].list_for(session, me.principal)
    return render.page(request, "circles.html", me=me, status=status, kind=kind, spec=spec,
                       rows=rows, error=error, notice=render.notice_of(request))


def _circle_routes(kind):
    spec = CIRCLES[kind]

    @router.get(f"/{kind}", name=f"{kind}_page")
    def listing(request: Request):
        return _circles(request, render.need(request), kind)

    @router.post(f"/{kind}", name=f"{kind}_create")
    async def create(request: Request):
        me, form = await render.posted(request)

        def run(session):
            users.require_active(me.principal)
            spec["create"](session, me.principal, (form.get("name") or "").strip())
        try:
            await run_in_threadpool(render.master_of(request).write, run)
        except ApiError as exc:
            return await run_in_threadpool(_circles, request, me, kind, exc.status, exc.message)
        return render.redirect(f"/{kind}", f"Created {form.get('name', '').strip()}.")

    @router.post(f"/{kind}/{{name}}/{{action}}", name=f"{kind}_change")
    async def change(request: Request, name: str, action: str):
        me, form = await render.posted(request)
        if action not in ("add", "remove"):
            raise BadRequest("action must be add or remove")
        member = (form.get(spec["member"]) or "").strip()

        def run(session):
            users.require_active(me.principal)
            spec[action](session, me.principal, name, member)
        try:
            await run_in_threadpool(render.master_of(request).write, run)
        except ApiError as exc:
            return await run_in_threadpool(_circles, request, me, kind, exc.status, exc.message)
        done = "Added" if action == "add" else "Removed"
        return render.redirect(f"/{kind}", f"{done} {member} {'to' if action == 'add' else 'from'} {name}.")


for _kind in CIRCLES:
    _circle_routes(_kind)

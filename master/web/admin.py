"""Admin pages of My Space: users (create, first password, invitation link,
disable), the catalog (add a release from its URL, its schema read from beside
it), supplies, and every computer. Every other user gets 404 here."""

import urllib.parse

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from slapnode import release_meta

from .. import catalog, computers, users
from ..errors import ApiError, BadRequest, NotFound
from ..models import Computer, Supply
from . import render, sessions
from .services import _catalog

router = APIRouter(include_in_schema=False)
SECTIONS = ("users", "catalog", "supplies", "computers")


def _admin(me):
    if not me.principal.is_admin:
        raise NotFound("no such page")
    return me


def need_admin(request):
    return _admin(render.need(request))


def _section(request, me, section, status=200, error="", made=None):
    with render.master_of(request).read() as session:
        data = {}
        if section == "users":
            data["users"] = users.list_all(session)
        elif section == "catalog":
            data["entries"] = _catalog(session)
        elif section == "supplies":
            names = dict(session.execute(select(Computer.id, Computer.name)).all())
            data["supplies"] = [{"node": names.get(s.computer_id), "url": s.url,
                                 "requested": s.requested, "status": s.status}
                                for s in session.scalars(select(Supply).order_by(Supply.url))]
            data["computers"] = sorted(names.values())
            data["entries"] = _catalog(session)
        else:
            data["computers"] = computers.list_for(session, me.principal)
    return render.page(request, f"admin_{section}.html", me=me, status=status, section=section,
                       sections=SECTIONS, error=error, made=made, notice=render.notice_of(request),
                       **data)


@router.get("/admin")
def admin_home(request: Request):
    need_admin(request)
    return render.redirect("/admin/users")


@router.get("/admin/{section}")
def admin_page(request: Request, section: str):
    me = need_admin(request)
    if section not in SECTIONS:
        raise NotFound("no such page")
    return _section(request, me, section)


async def _posted_admin(request):
    me, form = await render.posted(request)
    return _admin(me), form


@router.post("/admin/users")
async def create_user(request: Request):
    me, form = await _posted_admin(request)

    def run(session):
        user, token = users.create(session, (form.get("name") or "").strip(),
                                   form.get("admin") == "on", (form.get("email") or "").strip(),
                                   by=me.principal)
        return {"name": user.name, "token": token}
    try:
        made = await run_in_threadpool(render.master_of(request).write, run)
    except ApiError as exc:
        return await run_in_threadpool(_section, request, me, "users", exc.status, exc.message)
    return await run_in_threadpool(_section, request, me, "users", 201, "", made)


@router.post("/admin/users/{name}/{action}")
async def change_user(request: Request, name: str, action: str):
    me, form = await _posted_admin(request)
    master = render.master_of(request)

    def run(session):
        if action == "password":
            sessions.check_new_password(form.get("password", ""), form.get("repeat", ""))
            users.set_password(session, me.principal, name, form.get("password", ""))
            return None
        if action == "invite":
            secret, expires = sessions.invite(session, me.principal, name)
            return {"name": name, "invite": f"{str(request.base_url).rstrip('/')}/invite/{secret}",
                    "expires_at": expires.isoformat()[:16]}
        if action in ("disable", "enable"):
            user = users.set_disabled(session, me.principal, name, action == "disable")
            return {"forget": user.id}
        raise BadRequest("unknown action")
    try:
        made = await run_in_threadpool(master.write, run)
    except ApiError as exc:
        return await run_in_threadpool(_section, request, me, "users", exc.status, exc.message)
    if made and "forget" in made:
        await run_in_threadpool(master.forget, "user", made["forget"])
        return render.redirect("/admin/users", f"{name} is {action}d.")
    if made is None:
        return render.redirect("/admin/users", f"{name}'s password is set.")
    return await run_in_threadpool(_section, request, me, "users", 201, "", made)


@router.post("/admin/catalog")
async def add_release(request: Request):
    me, form = await _posted_admin(request)
    url = (form.get("url") or "").strip()

    def run():
        if not url.startswith(("http://", "https://")):
            raise BadRequest("give the release's http(s) URL (its software.cfg); "
                             "the master reads its schema from beside it (URL + .json)")
        schema, description = None, ""
        if form.get("schema") != "none":
            try:
                schema, description, _where = release_meta.read(url)
            except release_meta.MetaError as exc:
                raise BadRequest(f"{exc}; fix it, or add the release without a schema") from None
        return render.master_of(request).write(
            catalog.add_by, me.principal, url, (form.get("title") or "").strip(),
            (form.get("description") or "").strip() or description or "",
            (form.get("price") or "0").strip(), schema, (form.get("price_cpu_hour") or "0").strip(),
            (form.get("price_disk_gb_month") or "0").strip(), (form.get("version") or "").strip())
    try:
        shown = await run_in_threadpool(run)
    except ApiError as exc:
        return await run_in_threadpool(_section, request, me, "catalog", exc.status, exc.message)
    return render.redirect("/admin/catalog", f"Added {shown['title']}"
                           + (" with its parameter schema." if shown["has_schema"] else "."))


@router.post("/admin/supplies")
async def add_supply(request: Request):
    me, form = await _posted_admin(request)

    def run(session):
        computers.supply(session, (form.get("software") or "").strip(),
                         (form.get("node") or "").strip(), form.get("state") or "available",
                         by=me.principal)
    try:
        await run_in_threadpool(render.master_of(request).write, run)
    except ApiError as exc:
        return await run_in_threadpool(_section, request, me, "supplies", exc.status, exc.message)
    return render.redirect("/admin/supplies", "Supplied.")


@router.post("/admin/computers/{name}/trusted")
async def set_trusted(request: Request, name: str):
    me, form = await _posted_admin(request)
    await run_in_threadpool(render.master_of(request).write, computers.set_trusted, me.principal,
                            name, form.get("trusted") == "yes")
    return render.redirect("/admin/computers", f"{urllib.parse.unquote(name)} changed.")

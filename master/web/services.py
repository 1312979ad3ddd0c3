"""My Space pages about software and instances: the catalog, a release's request
form (fields from its schema, the Parameter XML view, computer / network / group,
"there is space"), My Services (live), an instance's page and its actions.

Every change goes through the same functions as the API (``instances.request``,
``instances.change_state``): the web is another door to the same rules.
"""

import asyncio
import json
import urllib.parse

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from markupsafe import Markup
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from slapnode.errors import ParameterError

from .. import allocation, catalog, computers, groups, instances, networks, settings, usage, users
from ..core import ANY_INSTANCE
from ..errors import ApiError, BadRequest
from ..models import SoftwareRelease, utcnow
from . import forms, plots, render

router = APIRouter(include_in_schema=False)
MAX_COUNT = 100
SECRET_WORDS = ("password", "passwd", "secret", "token", "key", "credential")


def _catalog(session):
    releases = session.scalars(select(SoftwareRelease).order_by(SoftwareRelease.title)).all()
    currency = settings.currency(session)
    titles = {}
    for release in sorted(releases, key=catalog.version_key, reverse=True):
        titles.setdefault(release.title, []).append(catalog.view(release, currency=currency))
    return [{"title": title, "newest": shown[0], "versions": [v["version"] for v in shown]}
            for title, shown in sorted(titles.items())]


@router.get("/")
def home(request: Request):
    return render.redirect("/services" if render.who(request) else "/login")


@router.get("/software")
def software(request: Request):
    me = render.need(request)
    with render.master_of(request).read() as session:
        entries = _catalog(session)
    return render.page(request, "software.html", me=me, entries=entries)


def _choices(session, principal):
    usable = [c for c in computers.list_for(session, principal)
              if c["enrolled"] and c["scope"] != "closed"]
    return {"computers": usable, "networks": networks.list_for(session, principal),
            "groups": groups.list_for(session, principal)}


def _space(session, principal, node_filter):
    try:
        return allocation.count_free(session, allocation.parse_filter(node_filter), principal.id)
    except allocation.FilterError:
        return 0


def _node_filter(form):
    chosen = {}
    for key in ("computer", "network"):
        value = (form.get(key) or "").strip()
        if value:
            chosen[key] = value
    return chosen


def _release_page(request, me, title, version=None, form=None, status=200, error="",
                  field_errors=None, xml_error="", parameters=None):
    with render.master_of(request).read() as session:
        release = catalog.require(session, title, version or None)
        shown = catalog.view(release, currency=settings.currency(session))
        fields = forms.fields_of(release.parameter_schema)
        choices = _choices(session, me.principal)
        form = form or {}
        space = _space(session, me.principal, _node_filter(form))
        versions = catalog.versions(session, release.title)
    if parameters is None:
        values = {f.name: form.get("p:" + f.name, "") for f in fields} if form else \
            forms.form_from_params(fields, {})[0]
        if form:
            for item in fields:
                if item.kind == "checkbox":
                    values[item.name] = "p:" + item.name in form
        xml = form.get("xml") or "<instance></instance>"
        extras = []
    else:
        values, extras = forms.form_from_params(fields, parameters)
        xml = forms.to_xml(parameters)
    named = {f.name for f in fields}
    unknown = [(k, v) for k, v in (field_errors or {}).items() if k not in named]
    return render.page(request, "release.html", me=me, status=status, release=shown, unknown=unknown,
                       versions=list(reversed(versions)), fields=fields, values=values, xml=xml,
                       extras=extras, choices=choices, space=space, form=form, error=error,
                       field_errors=field_errors or {}, xml_error=xml_error)


@router.get("/software/{title:path}")
def release_page(request: Request, title: str):
    me = render.need(request)
    return _release_page(request, me, title, request.query_params.get("version"))


def _titles(title, count):
    if count == 1:
        return [title]
    return [f"{title}-{i}" for i in range(1, count + 1)]


@router.post("/software/{title:path}")
async def request_from_form(request: Request, title: str):
    me, form = await render.posted(request)
    master = render.master_of(request)
    version = form.get("version") or None
    wanted_title = (form.get("title") or "").strip()

    def build():
        with master.read() as session:
            release = catalog.require(session, title, version)
            fields = forms.fields_of(release.parameter_schema)
        values = {f.name: form.get("p:" + f.name) for f in fields}
        parameters, _side = forms.choose(values, fields, form.get("xml"), form.get("xml_shown"),
                                         form.get("source"))
        count = (form.get("count") or "1").strip()
        if not count.isdigit() or not 1 <= int(count) <= MAX_COUNT:
            raise BadRequest(f"how many: give a whole number from 1 to {MAX_COUNT}")
        if not wanted_title:
            raise BadRequest("give the service a title, for example my-" + release.title)
        node_filter = _node_filter(form)
        group = (form.get("group") or "").strip() or None
        titles = _titles(wanted_title, int(count))
        with master.read() as session:
            for one in titles:
                instances.check_request(session, one, release.url, "default", parameters,
                                        node=node_filter, version=release.version or None)

        def run(session):
            users_instances = []
            for one in titles:
                instance, _changed = instances.request(
                    session, me.principal, one, release.url, "default", parameters,
                    node=node_filter, checked=True, group=group, version=release.version or None)
                users_instances.append(instance.title)
            return users_instances
        users.require_active(me.principal)
        return master.write(run)
    try:
        made = await run_in_threadpool(build)
    except forms.FormError as exc:
        return await run_in_threadpool(_release_page, request, me, title, version, form, 400,
                                       "some values are not right; see beside the fields", exc.fields)
    except ParameterError as exc:
        return await run_in_threadpool(_release_page, request, me, title, version, form, 400,
                                       "the Parameter XML is not right", None, str(exc))
    except ApiError as exc:
        if exc.status == 404 and "unknown software" in exc.message:
            raise
        return await run_in_threadpool(_release_page, request, me, title, version, form,
                                       exc.status, exc.message, exc.fields)
    if len(made) == 1:
        return render.redirect(f"/services/{urllib.parse.quote(made[0], safe='')}",
                               "Requested. It becomes ready without reloading this page.")
    return render.redirect("/services", f"Requested {len(made)} services.")


@router.post("/web/parameters")
async def parameters_sync(request: Request):
    """The request form's two views kept in sync by the same code that reads them:
    ``{"release", "version", "values": {...}}`` -> ``{"xml"}``;
    ``{"release", "version", "xml"}`` -> ``{"values", "extras"}`` or ``{"error"}``."""
    me = await run_in_threadpool(render.need, request)
    if not render.sessions.same(me.csrf, request.headers.get("x-csrf-token")):
        return JSONResponse({"detail": "reload the page"}, status_code=403)
    try:
        body = json.loads(await request.body())
        assert isinstance(body, dict)
    except (ValueError, AssertionError):
        return JSONResponse({"detail": "expected a JSON object"}, status_code=400)
    with render.master_of(request).read() as session:
        release = catalog.require(session, str(body.get("release", "")), body.get("version") or None)
        fields = forms.fields_of(release.parameter_schema)
    try:
        if "xml" in body:
            values, extras = forms.form_from_params(fields, forms.from_xml(str(body["xml"])))
            return {"values": values, "extras": extras}
        raw = body.get("values") if isinstance(body.get("values"), dict) else {}
        return {"xml": forms.to_xml(forms.params_from_form(fields, raw))}
    except ParameterError as exc:
        return {"error": str(exc)}
    except forms.FormError as exc:
        return {"error": str(exc), "fields": exc.fields}


@router.get("/web/space")
def space(request: Request):
    me = render.need(request)
    with render.master_of(request).read() as session:
        return {"free": _space(session, me.principal, _node_filter(request.query_params))}


def _services(request, me):
    with render.master_of(request).read() as session:
        titles = {url: (title, version) for url, title, version in session.execute(
            select(SoftwareRelease.url, SoftwareRelease.title, SoftwareRelease.version))}
        rows = instances.summaries(session, me.principal)
    for entry in rows:
        title, version = titles.get(entry["software"], (entry["software"], ""))
        entry["release"] = title + (f" {version}" if version else "")
    return rows


@router.get("/services")
def services(request: Request):
    me = render.need(request)
    return render.page(request, "services.html", me=me, rows=_services(request, me),
                       notice=render.notice_of(request))


def _instance(request, me, title, owner):
    master = render.master_of(request)
    with master.read() as session:
        instance = instances.get(session, me.principal, title, owner)
        view = instances.view(session, instance, master.naming)
        view["history"] = instances.history(session, me.principal, title, owner)
        view["release"] = catalog.lookup(session, view["software"])
        view["release"] = ({"title": view["release"].title, "version": view["release"].version}
                           if view["release"] is not None else None)
        view["instance_id"] = instance.id
    view["promises"] = [_promise(p) for p in view["promises"] or [] if isinstance(p, dict)]
    return view


def _promise(reported):
    """A promise result as the node reported it, shaped for a page (it is partition data)."""
    return {"name": str(reported.get("name", "?"))[:200], "ok": reported.get("ok") is True,
            "message": str(reported.get("message") or "")[:500]}


def _secret(key):
    return any(word in key.lower() for word in SECRET_WORDS)


def charts(series, since, until):
    """The monitoring plots of a usage series, one per metric."""
    return [Markup(plots.chart(plots.values(series, metric), metric, since, until))
            for metric in plots.METRICS]


def _range(request):
    name = request.query_params.get("range", "day")
    return name if name in plots.RANGES else "day"


def _window(range_name):
    span, resolution = plots.RANGES[range_name]
    until = utcnow()
    return until - span, until, resolution


@router.get("/services/{title:path}")
def instance_page(request: Request, title: str):
    me = render.need(request)
    owner = request.query_params.get("owner") or None
    view = _instance(request, me, title, owner)
    range_name = _range(request)
    since, until, resolution = _window(range_name)
    with render.master_of(request).read() as session:
        series = usage.instance_series(session, view["instance_id"], resolution, since, until)
    connection = [{"key": k, "value": v if isinstance(v, str) else json.dumps(v),
                   "secret": _secret(k)} for k, v in sorted(view["connection"].items())]
    parameters = forms.to_xml(view["parameters"]) if view["parameters"] else ""
    return render.page(request, "instance.html", me=me, view=view, owner=owner,
                       connection=connection, parameters_xml=parameters,
                       charts=charts(series, since, until), range_name=range_name,
                       ranges=list(plots.RANGES), notice=render.notice_of(request), error="")


@router.post("/services/{title:path}/state")
async def change_state(request: Request, title: str):
    me, form = await render.posted(request)
    owner = form.get("owner") or None
    state = form.get("state", "")
    back = f"/services/{urllib.parse.quote(title, safe='')}" + (
        f"?{urllib.parse.urlencode({'owner': owner})}" if owner else "")
    if state == "destroyed" and form.get("confirm", "") != title:
        raise BadRequest(f"to destroy it, type its title ({title}) in the box; nothing was changed")
    if state not in ("started", "stopped", "destroyed"):
        raise BadRequest("state must be started, stopped or destroyed")

    def run(session):
        users.require_active(me.principal)
        instances.change_state(session, me.principal, title, state, owner)
    await run_in_threadpool(render.master_of(request).write, run)
    words = {"started": "Starting.", "stopped": "Stopping.", "destroyed": "Destroying."}
    return render.redirect(back, words[state])


@router.get("/web/events")
async def events(request: Request):
    """Server-sent events: the caller's instances (or, with ``title``, one instance's
    page data) each time one of them changes."""
    me = await run_in_threadpool(render.need, request)
    title = request.query_params.get("title")
    owner = request.query_params.get("owner") or None
    board = render.master_of(request).board

    def snapshot():
        if title is None:
            return json.dumps(_services(request, me))
        view = _instance(request, me, title, owner)
        return json.dumps({"status": view["status"], "state": view["state"],
                           "reason": view["reason"], "node": view["node"],
                           "partition": view["partition"], "promises": view["promises"],
                           "connection": [{"key": k, "value": v if isinstance(v, str) else json.dumps(v),
                                           "secret": _secret(k)}
                                          for k, v in sorted(view["connection"].items())]})

    async def stream():
        last = None
        yield "retry: 3000\n\n"
        while not board.closing:
            seen = board.get(ANY_INSTANCE) or 0
            try:
                data = await run_in_threadpool(snapshot)
            except ApiError:
                yield "event: gone\ndata: {}\n\n"
                return
            if data != last:
                yield f"data: {data}\n\n"
                last = data
            else:
                yield ": still here\n\n"
            await board.wait_past(ANY_INSTANCE, seen, 20.0)
            await asyncio.sleep(0.2)        # many changes at once: one update
    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

"""The ASGI application: routes, error answers, static releases, start-up.

Owns how the master answers HTTP: every error is JSON ``{"detail": "one
line"}`` with a 4xx for the caller's mistakes; the OpenAPI document is at
``/api/v1/openapi.json``; the shipped software releases are served under
``/software-releases/``.
"""

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from slapnode import __version__

from . import invoices, limits, tls, usage
from .api import cache, catalog, computers, groups, instances, invoices as invoices_api, node, users
from .api.deps import SafeJSONResponse
from .errors import ApiError
from .longpoll import LongPoll
from .users import NodeCredentials, UserTokens
from . import web
from .web import render as web_render

log = logging.getLogger("slapnode.master")
API = "/api/v1"


def _one_line_validation(exc):
    parts = []
    for error in exc.errors()[:5]:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            parts.append(f"body: not valid JSON{' (' + str(reason) + ')' if reason else ''}")
            continue
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


class BodyLimit:
    """Refuse request bodies over their cap with 413, counting what arrives (a
    Content-Length may lie or be absent). Binary cache uploads have their own cap."""

    def __init__(self, app):
        self.app = app

    @staticmethod
    def cap(path):
        if path.startswith(f"{API}/node/cache/"):
            return None
        if path == f"{API}/node/mail":
            return limits.MAX_MAIL_BODY
        return limits.MAX_REPORT_BODY if path == f"{API}/node/report" else limits.MAX_BODY

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        cap = self.cap(scope["path"])
        if cap is None:
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return await self._refuse(send, cap)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise _TooLarge()
            return message
        try:
            return await self.app(scope, counted, send)
        except _TooLarge:
            return await self._refuse(send, cap)

    @staticmethod
    async def _refuse(send, cap):
        body = json.dumps({"detail": f"request body larger than {cap // 1024} KiB; "
                                     "keep large data out of parameters and reports"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


async def _housekeeping(master):
    """What the master does on its own, every PRUNE_EVERY seconds: it downsamples usage
    history (old raw samples and old hourly rows go; the hourly rows are kept current at
    ingest) and issues the invoices of a month that has ended."""
    while True:
        for job in (usage.prune, invoices.close_due):
            try:
                await asyncio.to_thread(master.write, job)
            except Exception:           # a busy or restarting database: next time
                log.exception("%s failed", job.__name__)
        await asyncio.sleep(usage.PRUNE_EVERY)


def create_app(master, housekeeping=True):
    """The ASGI app over ``master``; ``housekeeping``: this process prunes usage and
    closes months (one worker of several does)."""
    @contextlib.asynccontextmanager
    async def lifespan(app):
        master.board.attach(asyncio.get_running_loop())
        master.seed_revisions()
        if master.fanout is not None:
            master.fanout.start()
        tasks = [asyncio.create_task(master.liveness.run(watch=housekeeping))]
        if housekeeping:
            tasks.append(asyncio.create_task(_housekeeping(master)))
        yield
        for task in tasks:
            task.cancel()
        master.dispose()

    app = FastAPI(title="slapnode master", version=__version__, lifespan=lifespan,
                  openapi_url=f"{API}/openapi.json", docs_url=None, redoc_url=None,
                  default_response_class=SafeJSONResponse)
    app.state.master = master
    app.state.nodes = NodeCredentials()
    app.state.user_tokens = UserTokens()

    def forget(kind, value):
        if kind == "token":
            app.state.user_tokens.forget(value)
        elif kind == "user":
            app.state.user_tokens.forget_user(int(value))
        elif kind == "computer":
            app.state.nodes.forget_computer(int(value))
        elif kind == "all":
            app.state.user_tokens.clear()
            app.state.nodes.clear()
    master.forgetters.append(forget)

    @app.exception_handler(web_render.SignInNeeded)
    async def sign_in_needed(request: Request, _exc):
        return web_render.login_redirect(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        if web_render.is_page(request):
            return await asyncio.to_thread(web_render.error_page, request, exc.status, exc.message)
        body = {"detail": exc.message, **({"fields": exc.fields} if exc.fields else {})}
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _one_line_validation(exc)}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def integrity_error(_request: Request, _exc: IntegrityError):
        return JSONResponse({"detail": "conflict with a concurrent change; try again"},
                            status_code=409)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if web_render.is_page(request):
            message = "no such page" if exc.status_code == 404 else str(exc.detail)
            return await asyncio.to_thread(web_render.error_page, request, exc.status_code, message)
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception):
        log.exception("internal error")
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); "
                                       "the master's log has the details"}, status_code=500)

    @app.get(f"{API}/ca", tags=["health"], response_class=PlainTextResponse)
    def certificate_authority():
        """The master's CA certificate (PEM), for nodes and users to pin by its fingerprint."""
        path = master.data_dir and tls.paths(master.data_dir)["ca"]
        if not path or not path.exists():
            raise ApiError("this master has no CA of its own", status=404)
        return PlainTextResponse(path.read_text(), media_type="application/x-pem-file")

    @app.get(f"{API}/ca.crl", tags=["health"], response_class=PlainTextResponse)
    def revocation_list():
        """The CA's revocation list (PEM): the partitions' certificates of destroyed
        instances, signed now, good for a day."""
        from . import certificates

        if not master.data_dir or not tls.paths(master.data_dir)["ca_key"].exists():
            raise ApiError("this master has no CA of its own", status=404)
        with master.read() as session:
            text = certificates.revocation_list(session, master.data_dir)
        return PlainTextResponse(text, media_type="application/x-pem-file")

    @app.get(f"{API}/health", tags=["health"])
    def health():
        return {"ok": True, "version": __version__, "parked_long_polls": master.board.parked,
                "worker": os.getpid()}

    for module in (users, catalog, computers, groups, instances, invoices_api, cache, node):
        app.include_router(module.router, prefix=API)

    if master.releases_dir and Path(master.releases_dir).is_dir():
        app.mount("/software-releases", StaticFiles(directory=master.releases_dir),
                  name="software-releases")
    web.install(app, API)
    app.add_middleware(BodyLimit)
    # outermost: unchanged desired-state polls are parked before the framework
    app.add_middleware(LongPoll, master=master, nodes=app.state.nodes)
    return app

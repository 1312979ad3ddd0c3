"""The ASGI application: routes, error answers, static releases, start-up.

Owns how the master answers HTTP: every error is JSON ``{"detail": "one
line"}`` with a 4xx for the caller's mistakes; the OpenAPI document is at
``/api/v1/openapi.json``; the shipped software releases are served under
``/software-releases/``.
"""

import asyncio
import contextlib
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from slapnode import __version__

from .api import cache, catalog, computers, instances, node, users
from .errors import ApiError
from .users import NodeCredentials, UserTokens

log = logging.getLogger("slapnode.master")
API = "/api/v1"


def _one_line_validation(exc):
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def create_app(master):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        master.board.attach(asyncio.get_running_loop())
        master.seed_revisions()
        yield
        master.dispose()

    app = FastAPI(title="slapnode master", version=__version__, lifespan=lifespan,
                  openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs", redoc_url=None)
    app.state.master = master
    app.state.nodes = NodeCredentials()
    app.state.user_tokens = UserTokens()

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _one_line_validation(exc)}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def integrity_error(_request: Request, _exc: IntegrityError):
        return JSONResponse({"detail": "conflict with a concurrent change; try again"},
                            status_code=409)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception):
        log.exception("internal error")
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); "
                                       "the master's log has the details"}, status_code=500)

    @app.get("/", include_in_schema=False)
    def root():
        return {"name": "slapnode master", "version": __version__, "api": API,
                "openapi": f"{API}/openapi.json"}

    @app.get(f"{API}/health", tags=["health"])
    def health():
        return {"ok": True, "version": __version__}

    for module in (users, catalog, computers, instances, cache, node):
        app.include_router(module.router, prefix=API)

    if master.releases_dir and Path(master.releases_dir).is_dir():
        app.mount("/software-releases", StaticFiles(directory=master.releases_dir),
                  name="software-releases")
    return app

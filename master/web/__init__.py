"""My Space: the master's web interface, served at ``/`` by the same process and
database as the API, through the same library functions (no second source of truth).

Owns putting the pages together: their routers, the static files (our own CSS and
script, and the npm packages in ``node_modules/`` fetched by ``assets.py``), the
security headers every answer carries (a strict Content-Security-Policy: no inline
script or style, nothing from another host), the API docs served offline, and
turning an error on a page into an HTML page (sign-in needed: a redirect).
"""

from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from . import account, admin, assets, billing, render, servers, services

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
           (b"cross-origin-opener-policy", b"same-origin"),
           (b"permissions-policy", b"camera=(), microphone=(), geolocation=()")]


class SecurityHeaders:
    """Adds the security headers to every HTTP answer (the API's too: harmless there)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in HEADERS if h[0] not in present]
            await send(message)
        return await self.app(scope, receive, with_headers)


DOCS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>slapnode master API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/vendor/swagger-ui-dist/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="/static/vendor/swagger-ui-dist/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script></body></html>"""


def install(app, api_prefix):
    """Mount My Space on the master's app."""
    for module in (account, services, servers, billing, admin):
        app.include_router(module.router)
    app.mount("/static/vendor", StaticFiles(directory=assets.MODULES, check_dir=False),
              name="vendor")
    app.mount("/static", StaticFiles(directory=render.HERE / "static"), name="static")

    @app.get(f"{api_prefix}/docs", include_in_schema=False)
    def docs():
        if not assets.installed("swagger-ui-dist", assets.wanted()["swagger-ui-dist"][0]):
            return HTMLResponse(
                "<!doctype html><title>API docs</title><p>The API docs' assets are not installed: "
                "run <code>python -m slapnode.master.web.assets</code> (install.sh does). The OpenAPI "
                f"document is at <a href=\"{api_prefix}/openapi.json\">{api_prefix}/openapi.json"
                "</a>.</p>", status_code=503)
        return HTMLResponse(DOCS)
    app.add_middleware(SecurityHeaders)

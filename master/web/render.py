"""What every page of My Space needs: templates, who is signed in, posted forms
checked against CSRF, and the answers (a page, a redirect, an error page).

Owns the Jinja2 environment (autoescaping everywhere: a title or a connection
value holding HTML is shown as text), the session cookie's attributes, reading
an urlencoded form (size-capped, CSRF-checked) and the rule that a page's
errors are pages too (the API keeps answering JSON).
"""

import urllib.parse
from pathlib import Path

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from slapnode import __version__

from .. import limits
from ..errors import ApiError, Forbidden
from . import sessions

HERE = Path(__file__).resolve().parent
JSON_PREFIXES = ("/api/", "/web/", "/software-releases/", "/static/")
MAX_FORM = limits.MAX_BODY

ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                         autoescape=True, trim_blocks=True, lstrip_blocks=True,
                         undefined=jinja2.StrictUndefined)
ENV.filters["q"] = lambda text: urllib.parse.quote(str(text), safe="")
ENV.filters["when"] = lambda moment: (moment or "")[:16].replace("T", " ") if moment else "never"
ENV.filters["is_link"] = lambda value: isinstance(value, str) and value.startswith(("http://", "https://"))
ENV.globals["version"] = __version__

NAV = [("/software", "Software"), ("/services", "My Services"), ("/servers", "My Servers"),
       ("/networks", "My Networks"), ("/groups", "My Groups"), ("/invoices", "My Invoices"),
       ("/account", "My Account")]


class SignInNeeded(Exception):
    pass


def is_page(request):
    """Whether an error on this path is shown as an HTML page (else JSON)."""
    return not request.url.path.startswith(JSON_PREFIXES)


def master_of(request):
    return request.app.state.master


def secure(request):
    return request.url.scheme == "https"


def who(request):
    """The SignedIn of this browser, or None (a database read)."""
    secret = request.cookies.get(sessions.COOKIE)
    if not secret:
        return None
    with master_of(request).read() as session:
        return sessions.signed_in(session, secret)


def need(request):
    """The SignedIn of this browser; else the page asks to sign in."""
    found = who(request)
    if found is None:
        raise SignInNeeded()
    return found


def page(request, template, me=None, status=200, **context):
    html = ENV.get_template(template).render(
        me=me.principal if me is not None else None, csrf=me.csrf if me is not None else "",
        nav=NAV, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def redirect(url, notice=None):
    if notice:
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"notice": notice})
    return RedirectResponse(url, status_code=303)


def notice_of(request):
    """A short message carried by a redirect (shown as text, never as markup)."""
    return (request.query_params.get("notice") or "")[:200]


def set_session_cookie(response, request, secret):
    response.set_cookie(sessions.COOKIE, secret, max_age=int(sessions.LIFETIME.total_seconds()),
                        httponly=True, samesite="lax", secure=secure(request), path="/")


def clear_session_cookie(response, request):
    response.delete_cookie(sessions.COOKIE, httponly=True, samesite="lax",
                           secure=secure(request), path="/")


async def form_of(request: Request):
    """The posted urlencoded form as {name: value} (the last of repeated names), capped."""
    body = await request.body()
    if len(body) > MAX_FORM:
        raise ApiError(f"form larger than {MAX_FORM // 1024} KiB", status=413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("the form is not UTF-8 text") from None
    return dict(urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=2000))


async def posted(request: Request):
    """(SignedIn, form) of a POST from a signed-in page, its CSRF token checked."""
    me = await run_in_threadpool(need, request)
    form = await form_of(request)
    if not sessions.same(me.csrf, form.get("csrf")):
        raise Forbidden("this form has expired or did not come from this site; "
                        "reload the page and send it again")
    return me, form


async def posted_anonymous(request: Request):
    """The form of a page shown before signing in (sign-in, invitation): its token
    must match the double-submit cookie."""
    form = await form_of(request)
    if not sessions.same(request.cookies.get(sessions.PRE_COOKIE), form.get("csrf")):
        raise Forbidden("this form has expired or your browser refused its cookie; "
                        "reload the page and send it again (cookies must be allowed)")
    return form


def anonymous_page(request, template, status=200, **context):
    """A page with a form before signing in: it gets a fresh double-submit token."""
    token = request.cookies.get(sessions.PRE_COOKIE) or sessions.new_csrf()
    response = page(request, template, status=status, anon_csrf=token, **context)
    response.set_cookie(sessions.PRE_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure(request), path="/")
    return response


def error_page(request, status, message):
    me = None
    try:
        me = who(request)
    except Exception:                       # the error may be the database itself
        pass
    titles = {401: "Sign-in needed", 403: "Not allowed", 404: "Not found", 409: "Conflict",
              413: "Too large", 422: "Not accepted", 429: "Too many attempts"}
    return page(request, "error.html", me=me, status=status, message=message,
                heading=titles.get(status, "Something went wrong"))


def login_redirect(request):
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urllib.parse.urlencode({"next": target}), status_code=303)


def safe_next(target):
    """Where to go after signing in: a path on this site only (never another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/services"
    return target

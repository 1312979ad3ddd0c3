"""My Space pages about who you are: sign in (password or token), sign out, the
one-time invitation link, My Account (tokens, password)."""

import datetime as dt

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from .. import users
from ..errors import ApiError, BadRequest
from ..models import User, utcnow
from . import render, sessions

router = APIRouter(include_in_schema=False)
throttle = sessions.Throttle()


def _address(request):
    return request.client.host if request.client else "?"


@router.get("/login")
def login_page(request: Request):
    if render.who(request) is not None:
        return render.redirect(render.safe_next(request.query_params.get("next")))
    return render.anonymous_page(request, "login.html", next=request.query_params.get("next", ""),
                                 error="", name="", method="password")


@router.post("/login")
async def login(request: Request):
    form = await render.posted_anonymous(request)
    method = "token" if form.get("method") == "token" else "password"
    name = (form.get("name") or "").strip()[:64]
    address = _address(request)
    # a token names no user: its failures count per address only (one shared "token"
    # bucket would let anyone lock every token sign-in out with five wrong tries)
    key = name if method == "password" else f"token@{address}"
    master = render.master_of(request)
    wait = throttle.wait(key, address)
    if wait:
        exc = sessions.refuse_for(wait)
        return render.anonymous_page(request, "login.html", status=429, next=form.get("next", ""),
                                     error=exc.message, name=name, method=method)

    def run(session):
        if method == "token":
            principal, token_id = sessions.token_sign_in(session, form.get("token") or "")
        else:
            principal, token_id = users.check_password(session, name, form.get("password") or ""), None
        return principal, sessions.open_session(session, principal, token_id)
    try:
        principal, secret = await run_in_threadpool(master.write, run)
    except ApiError as exc:
        throttle.failed(key, address)
        message = exc.message if method == "token" else "wrong user name or password"
        return render.anonymous_page(request, "login.html", status=401, next=form.get("next", ""),
                                     error=message, name=name, method=method)
    throttle.succeeded(principal.name)
    response = render.redirect(render.safe_next(form.get("next")))
    render.set_session_cookie(response, request, secret)
    return response


@router.post("/logout")
async def logout(request: Request):
    await render.posted(request)
    secret = request.cookies.get(sessions.COOKIE)
    await run_in_threadpool(render.master_of(request).write, sessions.close_session, secret)
    response = render.redirect("/login", "You are signed out.")
    render.clear_session_cookie(response, request)
    return response


@router.get("/invite/{secret}")
def invite_page(request: Request, secret: str):
    with render.master_of(request).read() as session:
        _row, user = sessions.invited(session, secret)
    return render.anonymous_page(request, "invite.html", user_name=user.name, error="")


@router.post("/invite/{secret}")
async def accept_invite(request: Request, secret: str):
    form = await render.posted_anonymous(request)

    def run(session):
        sessions.check_new_password(form.get("password", ""), form.get("repeat", ""))
        principal = sessions.accept(session, secret, form.get("password", ""))
        return principal, sessions.open_session(session, principal)
    try:
        _principal, secret_cookie = await run_in_threadpool(render.master_of(request).write, run)
    except BadRequest as exc:
        with render.master_of(request).read() as session:
            _row, user = sessions.invited(session, secret)
        return render.anonymous_page(request, "invite.html", status=400, user_name=user.name,
                                     error=exc.message)
    response = render.redirect("/services", "Your password is set; you are signed in.")
    render.set_session_cookie(response, request, secret_cookie)
    return response


def _account(request, me, status=200, error="", new_token=None):
    with render.master_of(request).read() as session:
        user = session.get(User, me.principal.id)
        tokens = users.list_tokens(session, me.principal.id)
    return render.page(request, "account.html", me=me, status=status, user=users.view(user),
                       tokens=tokens, error=error, new_token=new_token,
                       notice=render.notice_of(request))


@router.get("/account")
def account(request: Request):
    return _account(request, render.need(request))


@router.post("/account/tokens")
async def create_token(request: Request):
    me, form = await render.posted(request)
    days = (form.get("days") or "").strip()

    def run(session):
        users.require_active(me.principal)
        expires = None
        if days:
            if not days.isdigit() or not 1 <= int(days) <= 3650:
                raise BadRequest("expiry: give a number of days between 1 and 3650, or leave it empty")
            expires = utcnow() + dt.timedelta(days=int(days))
        user = session.get(User, me.principal.id)
        return users.add_token(session, user, (form.get("name") or "").strip() or None, expires,
                               by=me.principal)
    try:
        token = await run_in_threadpool(render.master_of(request).write, run)
    except ApiError as exc:
        return await run_in_threadpool(_account, request, me, exc.status, exc.message)
    return await run_in_threadpool(_account, request, me, 201, "", token)


@router.post("/account/tokens/{name}/revoke")
async def revoke_token(request: Request, name: str):
    me, _form = await render.posted(request)
    master = render.master_of(request)
    digest = await run_in_threadpool(master.write, users.revoke_token, me.principal, name)
    await run_in_threadpool(master.forget, "token", digest)
    return render.redirect("/account", f"Token {name} is revoked.")


@router.post("/account/password")
async def change_password(request: Request):
    me, form = await render.posted(request)

    def run(session):
        users.require_active(me.principal)
        user = session.get(User, me.principal.id)
        if user.password_hash is not None:
            users.check_password(session, me.principal.name, form.get("current", ""))
        sessions.check_new_password(form.get("password", ""), form.get("repeat", ""))
        users.set_password(session, me.principal, me.principal.name, form.get("password", ""))
        sessions.close_others(session, me.principal.id, keep_id=me.session_id)
    try:
        await run_in_threadpool(render.master_of(request).write, run)
    except ApiError as exc:
        message = "the current password is wrong" if exc.status == 401 else exc.message
        return await run_in_threadpool(_account, request, me, 400, message)
    return render.redirect("/account", "Your password is changed; other sessions are signed out.")

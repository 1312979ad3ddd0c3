"""/api/v1/me, /api/v1/users and /api/v1/tokens."""

from fastapi import APIRouter, Request

from .. import users
from ..models import iso
from ..web import sessions as web_sessions
from .bodies import PasswordSet, TokenCreate, UserChange, UserCreate
from .deps import admin_in, master_of, StrictRoute, user_in, writer_in

router = APIRouter(tags=["users"], route_class=StrictRoute)


@router.get("/me")
def me(request: Request):
    with master_of(request).read() as session:
        principal = user_in(session, request)
        return users.view(users.get(session, principal.name))


@router.get("/users")
def list_users(request: Request):
    with master_of(request).read() as session:
        admin_in(session, request)
        return users.list_all(session)


@router.post("/users", status_code=201)
def create_user(body: UserCreate, request: Request):
    def run(session):
        admin = admin_in(session, request)
        user, token = users.create(session, body.name, body.admin, body.email, by=admin)
        return {**users.view(user), "token": token}
    return master_of(request).write(run)


@router.patch("/users/{name}")
def change_user(name: str, body: UserChange, request: Request):
    def run(session):
        admin = admin_in(session, request)
        user = users.get(session, name)
        if body.email is not None:
            user.email = users.check_email(body.email)
        if body.disabled is not None:
            users.set_disabled(session, admin, name, body.disabled)
        return user.id, users.view(user)
    user_id, answer = master_of(request).write(run)
    master_of(request).forget("user", user_id)
    return answer


@router.put("/users/{name}/password", status_code=204)
def set_password(name: str, body: PasswordSet, request: Request):
    def run(session):
        principal = writer_in(session, request)
        if principal.name != name:
            users.require_admin(principal)
        users.set_password(session, principal, name, body.password)
    master_of(request).write(run)


@router.post("/users/{name}/invite", status_code=201)
def invite_user(name: str, request: Request):
    """A one-time link (``path`` on this master) with which the user sets their password."""
    def run(session):
        secret, expires = web_sessions.invite(session, admin_in(session, request), name)
        return {"name": name, "path": f"/invite/{secret}", "expires_at": iso(expires)}
    return master_of(request).write(run)


@router.get("/tokens")
def list_tokens(request: Request):
    with master_of(request).read() as session:
        principal = user_in(session, request)
        return users.list_tokens(session, principal.id)


@router.post("/tokens", status_code=201)
def create_token(body: TokenCreate, request: Request):
    def run(session):
        principal = writer_in(session, request)
        user = users.get(session, principal.name)
        token = users.add_token(session, user, body.name, body.expires_at, by=principal)
        listed = {t["name"]: t for t in users.list_tokens(session, user.id)}
        return {**listed[body.name], "token": token}
    return master_of(request).write(run)


@router.delete("/tokens/{name}", status_code=204)
def revoke_token(name: str, request: Request):
    def run(session):
        principal = user_in(session, request)    # a disabled user may still revoke
        return users.revoke_token(session, principal, name)
    digest = master_of(request).write(run)
    master_of(request).forget("token", digest)

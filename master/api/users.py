"""/api/v1/me and /api/v1/users."""

from fastapi import APIRouter, Request

from .. import users
from .bodies import UserCreate
from .deps import admin_in, master_of, StrictRoute, user_in

router = APIRouter(tags=["users"], route_class=StrictRoute)


@router.get("/me")
def me(request: Request):
    with master_of(request).read() as session:
        principal = user_in(session, request)
    return {"name": principal.name, "admin": principal.is_admin}


@router.post("/users", status_code=201)
def create_user(body: UserCreate, request: Request):
    def run(session):
        admin_in(session, request)
        user, token = users.create(session, body.name, body.admin)
        return {"name": user.name, "admin": user.is_admin, "token": token}
    return master_of(request).write(run)

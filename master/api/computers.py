"""/api/v1/computers and /api/v1/enrollment-tokens."""

from fastapi import APIRouter, Request

from .. import computers
from .bodies import EnrollmentTokenCreate, TrustChange
from .deps import admin_in, master_of, StrictRoute, user_in

router = APIRouter(tags=["computers"], route_class=StrictRoute)


@router.get("/computers")
def list_computers(request: Request):
    with master_of(request).read() as session:
        user_in(session, request)
        return computers.list_all(session)


@router.post("/enrollment-tokens", status_code=201)
def create_enrollment_token(body: EnrollmentTokenCreate, request: Request):
    def run(session):
        admin = admin_in(session, request)
        token = computers.create_enrollment_token(session, admin, body.name)
        return {"name": body.name, "token": token,
                "expires_in_days": computers.ENROLLMENT_LIFETIME.days}
    return master_of(request).write(run)


@router.patch("/computers/{name}")
def change_computer(name: str, body: TrustChange, request: Request):
    def run(session):
        admin_in(session, request)
        computer = computers.set_trusted(session, name, body.trusted_builder)
        return {"name": computer.name, "trusted_builder": computer.trusted_builder}
    return master_of(request).write(run)

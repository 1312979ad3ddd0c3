"""/api/v1/computers and /api/v1/enrollment-tokens."""

from datetime import datetime

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from .. import computers, credit, usage, users
from ..errors import Forbidden
from ..models import Computer
from .bodies import ComputerChange, EnrollmentTokenCreate
from .deps import master_of, SafeJSONResponse, StrictRoute, user_in, writer_in

router = APIRouter(tags=["computers"], route_class=StrictRoute)


@router.get("/computers")
def list_computers(request: Request):
    with master_of(request).read() as session:
        principal = user_in(session, request)
        return computers.list_for(session, principal)


@router.get("/computers/{name}")
def show_computer(name: str, request: Request):
    with master_of(request).read() as session:
        principal = user_in(session, request)
        found = computers.list_for(session, principal, name)
        if not found:
            computers.get_by_name(session, name)      # 404 if there is none at all
            raise Forbidden(f"computer {name!r} is neither yours nor open to you")
        return found[0]


@router.get("/computers/{name}/usage")
def computer_usage(name: str, request: Request, since: datetime | None = None,
                   until: datetime | None = None):
    """Hourly usage of everything the computer's partitions ran (its owner, or an admin)."""
    with master_of(request).read() as session:
        principal = user_in(session, request)
        computer = computers.owned(session, principal, name)
        return SafeJSONResponse(usage.computer_series(session, computer.id, users.aware(since),
                                                      users.aware(until)))


@router.get("/credit")
def computer_credit(request: Request, computer: str | None = Query(None, max_length=64),
                    month: str | None = Query(None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")):
    """Credit your computers earned (or one computer you may see) for what they gave to
    other users' instances."""
    with master_of(request).read() as session:
        principal = user_in(session, request)
        if computer:
            found = computers.get_by_name(session, computer)
            if not computers.list_for(session, principal, computer):
                raise Forbidden(f"computer {computer!r} is neither yours nor open to you")
            rows = [found]
        else:
            rows = session.scalars(select(Computer).where(Computer.owner_id == principal.id)
                                   .order_by(Computer.name)).all()
        return credit.for_computers(session, rows, month)


@router.get("/credit/top")
def credit_top(request: Request, limit: int = Query(credit.DEFAULT_TOP, ge=1, le=1000),
               month: str | None = Query(None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")):
    """The leaderboard: owners by the credit their computers earned."""
    with master_of(request).read() as session:
        user_in(session, request)
        return credit.top(session, limit, month)


@router.post("/enrollment-tokens", status_code=201)
def create_enrollment_token(body: EnrollmentTokenCreate, request: Request):
    def run(session):
        principal = writer_in(session, request)
        token = computers.create_enrollment_token(session, principal, body.name, body.scope)
        return {"name": body.name, "token": token, "scope": body.scope,
                "expires_in_days": computers.ENROLLMENT_LIFETIME.days}
    return master_of(request).write(run)


@router.patch("/computers/{name}")
def change_computer(name: str, body: ComputerChange, request: Request):
    """An admin marks a trusted builder; the computer's owner sets its scope."""
    def run(session):
        principal = writer_in(session, request)
        if body.trusted_builder is not None:
            users.require_admin(principal)
            computers.set_trusted(session, principal, name, body.trusted_builder)
        if body.scope is not None:
            computers.set_scope(session, principal, name, body.scope, body.friends)
        elif body.friends is not None:
            computer = computers.get_by_name(session, name)
            computers.set_scope(session, principal, name, computer.allocation_scope, body.friends)
        return computers.list_for(session, principal, name)[0]
    return master_of(request).write(run)

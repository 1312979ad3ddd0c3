"""/api/v1/software and /api/v1/supplies: the catalog and what nodes should have."""

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from .. import audit, catalog, computers
from ..models import Computer, SoftwareRelease, Supply
from .bodies import SoftwareCreate, SupplyRequest
from .deps import admin_in, master_of, StrictRoute, user_in

router = APIRouter(tags=["software"], route_class=StrictRoute)


@router.get("/software")
def list_software(request: Request):
    with master_of(request).read() as session:
        user_in(session, request)
        releases = session.scalars(select(SoftwareRelease).order_by(SoftwareRelease.title)).all()
        return [catalog.view(r) for r in releases]


@router.post("/software", status_code=201)
def add_software(body: SoftwareCreate, request: Request):
    def run(session):
        admin = admin_in(session, request)
        release = catalog.add(session, body.url, body.title, body.description, body.price, body.schema_)
        session.flush()
        audit.record(session, admin, "release", release.id, release.title, "added", url=release.url,
                     price=catalog.view(release).get("price"))
        return catalog.view(release)
    return master_of(request).write(run)


@router.get("/software/release")
def show_software(request: Request, ref: str = Query(min_length=1, max_length=1024)):
    with master_of(request).read() as session:
        user_in(session, request)
        release = catalog.require(session, ref)
        rows = session.execute(select(Computer.name, Supply.requested, Supply.status, Supply.log_tail)
                               .join(Computer, Supply.computer_id == Computer.id)
                               .where(Supply.url == release.url).order_by(Computer.name)).all()
        supplies = [{"node": r.name, "requested": r.requested, "status": r.status,
                     "log_tail": r.log_tail} for r in rows]
        return catalog.view(release, supplies)


@router.post("/supplies")
def supply(body: SupplyRequest, request: Request):
    def run(session):
        admin = admin_in(session, request)
        row = computers.supply(session, body.software, body.node, body.state, by=admin)
        return {"software": row.url, "node": body.node, "requested": row.requested,
                "status": row.status}
    return master_of(request).write(run)

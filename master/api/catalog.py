"""/api/v1/software and /api/v1/supplies: the catalog and what nodes should have."""

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from .. import catalog, computers, settings
from ..models import SoftwareRelease
from .bodies import SoftwareCreate, SupplyRequest
from .deps import admin_in, master_of, StrictRoute, user_in

router = APIRouter(tags=["software"], route_class=StrictRoute)


@router.get("/software")
def list_software(request: Request):
    with master_of(request).read() as session:
        user_in(session, request)
        releases = session.scalars(select(SoftwareRelease).order_by(SoftwareRelease.title)).all()
        currency = settings.currency(session)
        return [catalog.view(r, currency=currency) for r in releases]


@router.post("/software", status_code=201)
def add_software(body: SoftwareCreate, request: Request):
    def run(session):
        admin = admin_in(session, request)
        return catalog.add_by(session, admin, body.url, body.title, body.description, body.price,
                              body.schema_, body.price_cpu_hour, body.price_disk_gb_month,
                              body.version)
    return master_of(request).write(run)


@router.get("/software/release")
def show_software(request: Request, ref: str = Query(min_length=1, max_length=1024),
                  version: str | None = Query(None, max_length=64)):
    with master_of(request).read() as session:
        user_in(session, request)
        release = catalog.require(session, ref, version)
        supplies = catalog.supplies_of(session, release.url)
        return {**catalog.view(release, supplies, settings.currency(session)),
                "versions": catalog.versions(session, release.title)}


@router.post("/supplies")
def supply(body: SupplyRequest, request: Request):
    def run(session):
        admin = admin_in(session, request)
        row = computers.supply(session, body.software, body.node, body.state, by=admin)
        return {"software": row.url, "node": body.node, "requested": row.requested,
                "status": row.status}
    return master_of(request).write(run)

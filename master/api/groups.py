"""/api/v1/groups and /api/v1/networks: sets of users, sets of computers."""

from fastapi import APIRouter, Request

from .. import groups, networks
from .bodies import MemberAdd, NameBody, NetworkComputerAdd
from .deps import master_of, StrictRoute, user_in, writer_in

router = APIRouter(tags=["groups and networks"], route_class=StrictRoute)


@router.get("/groups")
def list_groups(request: Request):
    with master_of(request).read() as session:
        return groups.list_for(session, user_in(session, request))


@router.post("/groups", status_code=201)
def create_group(body: NameBody, request: Request):
    def run(session):
        return groups.view(session, groups.create(session, writer_in(session, request), body.name))
    return master_of(request).write(run)


@router.post("/groups/{name}/members")
def add_member(name: str, body: MemberAdd, request: Request):
    def run(session):
        group, changed = groups.add_member(session, writer_in(session, request), name, body.user)
        return {**groups.view(session, group), "changed": changed}
    return master_of(request).write(run)


@router.delete("/groups/{name}/members/{user}")
def remove_member(name: str, user: str, request: Request):
    def run(session):
        return groups.view(session, groups.remove_member(session, writer_in(session, request),
                                                         name, user))
    return master_of(request).write(run)


@router.get("/networks")
def list_networks(request: Request):
    with master_of(request).read() as session:
        return networks.list_for(session, user_in(session, request))


@router.post("/networks", status_code=201)
def create_network(body: NameBody, request: Request):
    def run(session):
        return networks.view(session, networks.create(session, writer_in(session, request), body.name))
    return master_of(request).write(run)


@router.post("/networks/{name}/computers")
def add_computer(name: str, body: NetworkComputerAdd, request: Request):
    def run(session):
        network, changed = networks.add_computer(session, writer_in(session, request), name,
                                                 body.computer)
        return {**networks.view(session, network), "changed": changed}
    return master_of(request).write(run)


@router.delete("/networks/{name}/computers/{computer}")
def remove_computer(name: str, computer: str, request: Request):
    def run(session):
        return networks.view(session, networks.remove_computer(session, writer_in(session, request),
                                                               name, computer))
    return master_of(request).write(run)

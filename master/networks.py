"""Networks: named sets of computers of one owner.

Owns networks and their computers. A user groups the computers they own into
networks and requests instances onto one (``--node network=NAME``, resolved
among the requester's own networks by allocation).
"""

import re

from sqlalchemy import delete, select

from . import audit
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .models import Computer, Network, NetworkComputer, iso

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _computer(session, name):
    computer = session.scalars(select(Computer).where(Computer.name == name)).first()
    if computer is None:
        raise NotFound(f"no computer {name!r}; see `slapnode computer list`")
    return computer


def check_name(name):
    if not NAME_RE.match(name or ""):
        raise BadRequest(f"network name {name!r} must be 1-64 letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit")


def get(session, principal, name):
    network = session.scalars(select(Network).where(Network.owner_id == principal.id,
                                                    Network.name == name)).first()
    if network is None:
        raise NotFound(f"you have no network {name!r}; see `slapnode network list`")
    return network


def computers_of(owner_id, name):
    """SQL: the ids of the computers in ``owner_id``'s network ``name``."""
    return (select(NetworkComputer.computer_id)
            .join(Network, Network.id == NetworkComputer.network_id)
            .where(Network.owner_id == owner_id, Network.name == name))


def create(session, principal, name):
    check_name(name)
    if session.scalars(select(Network.id).where(Network.owner_id == principal.id,
                                                Network.name == name)).first() is not None:
        raise Conflict(f"you already have a network named {name!r}")
    network = Network(owner_id=principal.id, name=name)
    session.add(network)
    session.flush()
    audit.record(session, principal, "network", network.id, name, "created")
    return network


def add_computer(session, principal, name, computer_name):
    network = get(session, principal, name)
    computer = _computer(session, computer_name)
    if computer.owner_id != principal.id:
        raise Forbidden(f"computer {computer_name!r} is not yours; a network holds its owner's "
                        "computers only")
    if session.get(NetworkComputer, (network.id, computer.id)) is not None:
        return network, False
    session.add(NetworkComputer(network_id=network.id, computer_id=computer.id))
    audit.record(session, principal, "network", network.id, name, "computer added",
                 computer=computer_name)
    return network, True


def remove_computer(session, principal, name, computer_name):
    network = get(session, principal, name)
    row = session.scalars(select(NetworkComputer).join(Computer, Computer.id == NetworkComputer.computer_id)
                          .where(NetworkComputer.network_id == network.id,
                                 Computer.name == computer_name)).first()
    if row is None:
        raise NotFound(f"computer {computer_name!r} is not in network {name!r}")
    session.execute(delete(NetworkComputer).where(NetworkComputer.network_id == network.id,
                                                  NetworkComputer.computer_id == row.computer_id))
    audit.record(session, principal, "network", network.id, name, "computer removed",
                 computer=computer_name)
    return network


def view(session, network):
    names = session.scalars(select(Computer.name)
                            .join(NetworkComputer, NetworkComputer.computer_id == Computer.id)
                            .where(NetworkComputer.network_id == network.id)
                            .order_by(Computer.name)).all()
    return {"name": network.name, "computers": list(names), "created_at": iso(network.created_at)}


def list_for(session, principal):
    return [view(session, n) for n in session.scalars(
        select(Network).where(Network.owner_id == principal.id).order_by(Network.name))]

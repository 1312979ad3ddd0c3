"""/api/v1/node/*: what a node calls with its credential.

Enrollment, capacity and partition reports, the desired-state long-poll and
the report of actual state. The long-poll answers unchanged polls from memory
and parks waiters on the revision board, holding no database connection.
"""

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from .. import certificates, computers, longpoll
from ..core import computer_key
from ..models import Computer, iso
from .bodies import (Capacity, CertificateRequest, Enrollment, MailRequest, NodeReport,
                     PartitionReport)
from . import deps
from .deps import master_of, node_of, SafeJSONResponse, StrictRoute

router = APIRouter(prefix="/node", tags=["node"], route_class=StrictRoute)

MAX_WAIT = 120.0


@router.post("/enroll", status_code=201)
def enroll(body: Enrollment, request: Request):
    master = master_of(request)

    def run(session):
        computer, credential = computers.enroll(
            session, body.token, body.name, body.capacity.model_dump(exclude_none=True))
        return computer.id, {"computer": computer.name, "credential": credential}
    computer_id, answer = master.write(run)
    master.forget("computer", computer_id)
    return answer


@router.put("/capacity")
def capacity(body: Capacity, request: Request):
    node = node_of(request)

    def run(session):
        computer = session.get(Computer, node.computer_id)
        computers.set_capacity(computer, body.model_dump(exclude_none=True))
        return {"computer": computer.name}
    return master_of(request).write(run)


@router.put("/partitions")
def partitions(body: PartitionReport, request: Request):
    node = node_of(request)

    def run(session):
        computer = session.get(Computer, node.computer_id)
        computers.report_partitions(session, computer, [p.model_dump() for p in body.partitions])
        return {"computer": computer.name, "partitions": len(body.partitions)}
    return master_of(request).write(run)


def _document(master, computer_id):
    with master.read() as session:
        computer = session.get(Computer, computer_id)
        doc = computers.desired_state(session, computer, master.naming)
    master.board.seed(computer_key(computer_id), doc["revision"])
    return doc


def revision_of(master, computer_id):
    """The computer's revision, read from the database and seeded on the board."""
    with master.read() as session:
        revision = session.get(Computer, computer_id).revision
    master.board.seed(computer_key(computer_id), revision)
    return revision


@router.get("/desired-state")
async def desired_state(request: Request, after: int | None = Query(None, ge=0),
                        wait: float = Query(0, ge=0, le=MAX_WAIT)):
    """The computer's desired state. With ``after=N``: answer ``changed: false``
    while the revision is still N, waiting up to ``wait`` seconds for a change."""
    master = master_of(request)
    # a credential not seen yet is looked up in the thread pool: thousands of nodes coming
    # back at once (a master restarted) must not hold the event loop one query each
    node = request.app.state.nodes.cached(deps.token_of(request)) or \
        await run_in_threadpool(node_of, request)
    master.liveness.saw(node.computer_id)
    key = computer_key(node.computer_id)
    if after is not None:
        current = master.board.get(key)
        if current is None:
            current = await run_in_threadpool(revision_of, master, node.computer_id)
        if current <= after and wait > 0:
            current = await longpoll.park(master.board, key, after, wait, request.receive)
            if current is None:         # the node went away
                return Response(status_code=204)
        if current <= after:
            return SafeJSONResponse({"revision": current, "changed": False})
    doc = await run_in_threadpool(_document, master, node.computer_id)
    return SafeJSONResponse({**doc, "changed": True})


@router.post("/report")
def report(body: NodeReport, request: Request):
    node = node_of(request)

    def run(session):
        computer = session.get(Computer, node.computer_id)
        computers.apply_report(session, computer, body.model_dump())
        return {"computer": computer.name, "revision": computer.revision}
    return master_of(request).write(run)


@router.post("/certificate")
def certificate(body: CertificateRequest, request: Request):
    """Sign a partition's certificate request (the key stays on the node) for the DNS name
    of the instance it holds and its addresses, with the master's CA."""
    node = node_of(request)
    master = master_of(request)

    with master.read() as session:
        computer = session.get(Computer, node.computer_id)
        cert, ca, not_after, record = certificates.sign(
            session, master.data_dir, computer, body.partition, body.instance_id, body.csr,
            master.naming)
    master.write(certificates.keep, node.computer_id, body.partition, body.instance_id, record)
    return {"certificate": cert, "ca": ca, "not_after": iso(not_after)}


@router.post("/mail")
def mail(body: MailRequest, request: Request):
    """Pass on a message one of the node's partitions sent: from the instance's own
    address, with the header naming it, to the master's smarthost; counted (not kept)
    in the instance's audit trail. 503 when the master has no smarthost, 502 when the
    smarthost does not take it now, 422 when it refuses it."""
    import base64
    import binascii

    from slapnode.mail.rules import with_header

    from .. import db as dbmod, mail as mailmod
    from ..errors import ApiError, BadRequest

    node = node_of(request)
    master = master_of(request)
    smarthost = mailmod.smarthost_of(dbmod.read_settings(master.data_dir)) \
        if master.data_dir else None
    if smarthost is None:
        raise ApiError("this master sends no mail: its admin sets a smarthost with "
                       "`slapnode master init --smtp-relay HOST:PORT`", status=503)
    mailmod.check_recipients(body.recipients)
    try:
        message = base64.b64decode(body.message, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("message: not base64") from None
    if len(message) > mailmod.MAX_MESSAGE:
        raise BadRequest(f"message larger than {mailmod.MAX_MESSAGE >> 20} MiB")

    def check(session):
        computer = session.get(Computer, node.computer_id)
        return mailmod.sender_for(session, computer, body.partition, body.instance_id,
                                  master.naming)
    with master.read() as session:
        sender, title, header = check(session)
    if body.sender != sender:
        raise BadRequest(f"the sender of instance {body.instance_id} is {sender}, "
                         f"not {body.sender[:80]}")
    accepted = mailmod.send(smarthost, sender, body.recipients,
                            with_header(message, header))

    def count(session):
        return mailmod.count(session, node, body.instance_id, title, accepted)
    master.write(count)
    return {"sender": sender, "recipients": accepted}

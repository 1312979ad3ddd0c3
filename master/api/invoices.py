"""/api/v1/invoices: drafts, issued invoices, closing a month, credit notes."""

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from slapnode import accounting

from .. import auth, invoices, users
from .bodies import CreditNote, InvoiceClose
from .deps import admin_in, master_of, SafeJSONResponse, StrictRoute, user_in

router = APIRouter(tags=["invoices"], route_class=StrictRoute)
MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"


def _subject(session, principal, user):
    """Whose invoices: the caller's, or (admins) the named user's."""
    if user is None or user == principal.name:
        return principal
    users.require_admin(principal)
    found = users.get(session, user)
    return auth.UserPrincipal(found.id, found.name, found.is_admin)


@router.get("/invoices")
def list_invoices(request: Request, user: str | None = Query(None, max_length=64)):
    """Issued invoices and credit notes, and the current month's draft first."""
    with master_of(request).read() as session:
        principal = user_in(session, request)
        subject = _subject(session, principal, user)
        current = invoices.draft(session, subject)
        listed = invoices.list_for(session, principal, subject.name if user or not principal.is_admin
                                   else None)
        return SafeJSONResponse([{"number": "draft", "kind": "draft", "user": subject.name,
                                  "month": current["month"], "currency": current["currency"],
                                  "total": current["total"], "issued_at": None, "credits": None}]
                                + listed)


def _answer(view, format):
    """JSON written at once (an invoice may have thousands of lines: FastAPI's generic
    encoder would walk each of them again), or CSV."""
    if format == "csv":
        return PlainTextResponse(accounting.to_csv(view), media_type="text/csv; charset=utf-8")
    return SafeJSONResponse(view)


@router.get("/invoices/draft")
def show_draft(request: Request, month: str | None = Query(None, pattern=MONTH),
               user: str | None = Query(None, max_length=64),
               format: str = Query("json", pattern="^(json|csv)$")):
    """What is owed so far for a month not closed yet (the current one by default)."""
    with master_of(request).read() as session:
        principal = user_in(session, request)
        return _answer(invoices.draft(session, _subject(session, principal, user), month), format)


@router.get("/invoices/{number}")
def show_invoice(number: str, request: Request, format: str = Query("json", pattern="^(json|csv)$")):
    with master_of(request).read() as session:
        return _answer(invoices.show(session, user_in(session, request), number), format)


@router.post("/invoices/close")
def close_month(body: InvoiceClose, request: Request):
    """Issue a month's invoices now (admins); the master does it on its own after the month."""
    def run(session):
        admin = admin_in(session, request)
        return {"month": body.month, "issued": invoices.close(session, body.month, by=admin)}
    return master_of(request).write(run)


@router.post("/invoices/{number}/credit", status_code=201)
def credit(number: str, body: CreditNote, request: Request):
    def run(session):
        admin = admin_in(session, request)
        note = invoices.credit_note(session, admin, number, body.reason)
        return invoices.show(session, admin, note.number)
    return master_of(request).write(run)

"""Invoices: drafts computed from what happened, issued invoices stored for good.

Owns reading periods, prices and monthly usage out of the database for
``slapnode.accounting`` (which does the arithmetic), issuing a month's invoices
with gapless sequential numbers, credit notes, and the views. A draft is
never stored: the current month's is recomputed when asked. An issued invoice
is never changed: a correction is a credit note that references it.
"""

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import aliased

from slapnode import accounting

from . import audit, settings
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .models import (Instance, InstancePeriod, Invoice, InvoiceLine, Sequence, Setting,
                     SoftwareRelease, UsageMonthly, User, iso, utcnow)

PREFIX = {"invoice": "INV", "credit": "CN"}


def _month(month):
    try:
        return accounting.month_bounds(month)
    except accounting.MonthError as exc:
        raise BadRequest(str(exc)) from None


def periods(session, start, end, user_id=None):
    """{user_id: [accounting.Period]} of the periods that overlap [start, end)."""
    query = (select(InstancePeriod.instance_id, InstancePeriod.started_at, InstancePeriod.ended_at,
                    Instance.owner_id, Instance.title, SoftwareRelease.title,
                    SoftwareRelease.price_cents, SoftwareRelease.cpu_hour_micros,
                    SoftwareRelease.disk_gb_month_micros)
             .join(Instance, Instance.id == InstancePeriod.instance_id)
             .outerjoin(SoftwareRelease, SoftwareRelease.id == InstancePeriod.release_id)
             .where(InstancePeriod.started_at < end,
                    (InstancePeriod.ended_at.is_(None)) | (InstancePeriod.ended_at > start)))
    if user_id is not None:
        query = query.where(Instance.owner_id == user_id)
    found = {}
    for (instance_id, started, ended, owner_id, title, release, price, cpu,
         disk) in session.execute(query):
        found.setdefault(owner_id, []).append(accounting.Period(
            instance_id, title, release if release is not None else "(removed release)",
            price or 0, cpu or 0, disk or 0, _utc(started), _utc(ended)))
    return found


def _utc(moment):
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def monthly_usage(session, instance_ids, month):
    """{instance_id: (cpu_seconds, disk_mb_seconds)} for the month, over all computers."""
    if not instance_ids:
        return {}
    rows = session.execute(
        select(UsageMonthly.instance_id, func.sum(UsageMonthly.cpu_seconds),
               func.sum(UsageMonthly.disk_mb_seconds))
        .where(UsageMonthly.instance_id.in_(instance_ids), UsageMonthly.month == month)
        .group_by(UsageMonthly.instance_id)).all()
    return {row[0]: (float(row[1] or 0), float(row[2] or 0)) for row in rows}


def draft(session, user, month=None, now=None, raw=False):
    """What ``user`` owes for ``month`` so far (the current month by default)."""
    now = now or utcnow()
    month = month or accounting.month_of(now)
    start, end = _month(month)
    mine = periods(session, start, end, user.id).get(user.id, [])
    usage = monthly_usage(session, sorted({p.instance_id for p in mine}), month)
    lines = accounting.lines(mine, usage, month, until=now)
    return _view(None, "draft", month, settings.currency(session), lines, None, user.name, raw=raw)


def _next_number(session, kind):
    session.execute(update(Sequence).where(Sequence.name == kind).values(value=Sequence.value + 1))
    value = session.scalar(select(Sequence.value).where(Sequence.name == kind))
    return f"{PREFIX[kind]}-{value:06d}"


def _store(session, kind, user_id, month, currency, lines, credits_id=None, note=""):
    invoice = Invoice(number=_next_number(session, kind), kind=kind, user_id=user_id, month=month,
                      currency=currency, total_cents=accounting.total(lines), issued_at=utcnow(),
                      credits_id=credits_id, note=note)
    session.add(invoice)
    session.flush()
    for position, line in enumerate(lines, 1):
        session.add(InvoiceLine(invoice_id=invoice.id, position=position,
                                instance_id=line["instance_id"], title=line["title"][:128],
                                kind=line["kind"], description=line["description"][:512],
                                period_start=line["period_start"], period_end=line["period_end"],
                                quantity=line["quantity"], unit=line["unit"],
                                unit_price=line["unit_price"], amount_cents=line["amount_cents"]))
    return invoice


def close(session, month, now=None, by=None):
    """Issue ``month``'s invoices (a month that has ended): one per user who owes
    something and has none for it yet. Returns the numbers issued."""
    now = now or utcnow()
    start, end = _month(month)
    if end > now:
        raise Conflict(f"{month} is not over yet (it ends {iso(end)}); its invoices are drafts "
                       "until then")
    currency = settings.currency(session)
    done = set(session.scalars(select(Invoice.user_id).where(Invoice.month == month,
                                                             Invoice.kind == "invoice")))
    by_user = periods(session, start, end)
    issued = []
    for user_id in sorted(by_user):
        if user_id in done:
            continue
        mine = by_user[user_id]
        usage = monthly_usage(session, sorted({p.instance_id for p in mine}), month)
        lines = accounting.lines(mine, usage, month)
        if not lines or accounting.total(lines) == 0:
            continue                                # nothing owed: no invoice
        invoice = _store(session, "invoice", user_id, month, currency, lines)
        audit.record(session, by, "invoice", invoice.id, invoice.number, "issued", month=month,
                     total=accounting.money(invoice.total_cents), currency=currency)
        issued.append(invoice.number)
    closed = settings.get(session, "invoices_closed_through")
    if closed is None or closed < month:
        _set_closed(session, month)
    return issued


def _set_closed(session, month):
    row = session.get(Setting, "invoices_closed_through")
    if row is None:
        session.add(Setting(key="invoices_closed_through", value=month))
    else:
        row.value = month


def close_due(session, now=None):
    """Close the month that ended last, if it is not closed yet (the master's own task)."""
    now = now or utcnow()
    last = accounting.previous_month(accounting.month_of(now))
    closed = settings.get(session, "invoices_closed_through")
    if closed is not None and closed >= last:
        return []
    return close(session, last, now)


def credit_note(session, admin, number, reason):
    """A credit note that cancels invoice ``number`` (once)."""
    if not reason or not reason.strip():
        raise BadRequest("a credit note needs a --reason (it is printed on it)")
    invoice = _get(session, number)
    if invoice.kind != "invoice":
        raise Conflict(f"{number} is a credit note; credit the invoice it references")
    if session.scalars(select(Invoice.id).where(Invoice.credits_id == invoice.id)).first():
        raise Conflict(f"invoice {number} was already credited")
    lines = accounting.negated(_lines(session, invoice.id))
    note = _store(session, "credit", invoice.user_id, invoice.month, invoice.currency, lines,
                  credits_id=invoice.id, note=reason.strip()[:1000])
    audit.record(session, admin, "invoice", invoice.id, number, "credited", by=note.number,
                 reason=reason.strip()[:200])
    return note


def _get(session, number):
    invoice = session.scalars(select(Invoice).where(Invoice.number == number)).first()
    if invoice is None:
        raise NotFound(f"no invoice {number!r}; see `slapnode invoice list`")
    return invoice


LINE_COLUMNS = ("instance_id", "title", "kind", "description", "period_start", "period_end",
                "quantity", "unit", "unit_price", "amount_cents")


def _lines(session, invoice_id):
    """An issued invoice's lines as dicts (plain rows: an invoice may have thousands)."""
    columns = [getattr(InvoiceLine, name) for name in LINE_COLUMNS]
    return [dict(zip(LINE_COLUMNS, row)) for row in session.execute(
        select(*columns).where(InvoiceLine.invoice_id == invoice_id).order_by(InvoiceLine.position))]


def _view(number, kind, month, currency, lines, invoice, user_name, references=None, raw=False):
    """The invoice as shown: each line's moments as ISO text and its amount as money;
    ``raw``: the lines as computed (moments, ``amount_cents``), for a caller that formats
    them itself (the web's invoice page, thousands of lines)."""
    stamps = {}         # most lines share their bounds: each moment is written once

    def stamp(moment):
        text = stamps.get(moment)
        if text is None:
            text = stamps[moment] = iso(moment)
        return text
    shown = [] if not raw else lines
    for line in lines if not raw else ():
        row = {k: v for k, v in line.items() if k != "amount_cents"}
        row["period_start"], row["period_end"] = stamp(line["period_start"]), stamp(line["period_end"])
        row["amount"] = accounting.money(line["amount_cents"])
        shown.append(row)
    return {
        "number": number, "kind": kind, "month": month, "currency": currency, "user": user_name,
        "issued_at": iso(invoice.issued_at) if invoice is not None else None,
        "credits": references, "note": invoice.note if invoice is not None else "",
        "lines": shown, "total": accounting.money(accounting.total(lines)),
    }


def show(session, principal, number, raw=False):
    invoice = _get(session, number)
    if invoice.user_id != principal.id and not principal.is_admin:    # as if it did not exist
        raise NotFound(f"no invoice {number!r}; see `slapnode invoice list`")
    references = None
    if invoice.credits_id is not None:
        references = session.scalar(select(Invoice.number).where(Invoice.id == invoice.credits_id))
    owner = session.scalar(select(User.name).where(User.id == invoice.user_id))
    return _view(invoice.number, invoice.kind, invoice.month, invoice.currency,
                 _lines(session, invoice.id), invoice, owner, references, raw)


def list_for(session, principal, user_name=None):
    """Issued invoices and credit notes (the caller's; an admin's choice of user or all)."""
    credited = aliased(Invoice)
    query = (select(Invoice, User.name, credited.number)
             .join(User, User.id == Invoice.user_id)
             .outerjoin(credited, credited.id == Invoice.credits_id).order_by(Invoice.id))
    if user_name is not None:
        if not principal.is_admin and user_name != principal.name:
            raise Forbidden("you see your own invoices only")
        query = query.where(User.name == user_name)
    elif not principal.is_admin:
        query = query.where(Invoice.user_id == principal.id)
    return [{"number": i.number, "kind": i.kind, "user": name, "month": i.month,
             "currency": i.currency, "total": accounting.money(i.total_cents),
             "issued_at": iso(i.issued_at), "credits": credits}
            for i, name, credits in session.execute(query)]

"""My Invoices: the list (issued invoices and credit notes, and this month's
draft), each invoice as a printable page (A4 print stylesheet), and its CSV."""

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup, escape

from slapnode import accounting

from .. import invoices, users
from . import render

router = APIRouter(include_in_schema=False)


@router.get("/invoices")
def invoice_list(request: Request):
    me = render.need(request)
    with render.master_of(request).read() as session:
        rows = invoices.list_for(session, me.principal,
                                 None if me.principal.is_admin else me.principal.name)
    return render.page(request, "invoices.html", me=me, rows=rows)


def _invoice(request, me, number, raw=False):
    with render.master_of(request).read() as session:
        if number == "draft":
            return invoices.draft(session, users.get(session, me.principal.name), raw=raw)
        return invoices.show(session, me.principal, number, raw=raw)


@router.get("/invoices/{number}.csv")
def invoice_csv(request: Request, number: str):
    view = _invoice(request, render.need(request), number)
    name = f"invoice-{view['number'] or 'draft-' + view['month']}.csv"
    return Response(accounting.to_csv(view), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "Cache-Control": "no-store"})


def lines_html(lines):
    """The rows of an invoice's lines as computed (thousands on a big draft): written at
    once rather than through the template engine line by line (several times faster).
    Title and description hold users' text and are escaped; every value is."""
    row = ('<tr><td>{}</td><td>{}</td><td>{} – {}</td><td class="num">{} {}</td>'
           '<td class="num">{}</td><td class="num">{}</td></tr>')
    seen = {}           # most lines share their bounds, units and prices: each written once

    def text(value):
        shown = seen.get(value)
        if shown is None:
            if isinstance(value, dt.datetime):
                moment = value.astimezone(dt.timezone.utc) if value.tzinfo else value
                shown = seen[value] = moment.strftime("%Y-%m-%d %H:%M")
            else:
                shown = seen[value] = str(escape(value))
        return shown
    return Markup("\n".join(row.format(
        escape(line["title"]), escape(line["description"]), text(line["period_start"]),
        text(line["period_end"]), text(line["quantity"]), text(line["unit"]),
        text(line["unit_price"]), escape(accounting.money(line["amount_cents"])))
        for line in lines))


@router.get("/invoices/{number}")
def invoice_page(request: Request, number: str):
    me = render.need(request)
    invoice = _invoice(request, me, number, raw=True)
    return render.page(request, "invoice.html", me=me, invoice=invoice,
                       rows=lines_html(invoice["lines"]))

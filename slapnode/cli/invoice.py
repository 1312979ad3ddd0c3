"""``slapnode invoice``: what you owe, month by month."""

import click

from .. import accounting
from .context import json_option, pass_context, print_json, print_table, printable


@click.group("invoice")
def group():
    """Invoices: the current month's draft, issued invoices and credit notes."""


@group.command("list")
@click.option("--user", metavar="NAME", help="Another user's invoices (admins).")
@json_option
@pass_context
def list_(ctx, user, as_json):
    """List your invoices, the current month's draft first.

    \b
    Example:
      slapnode invoice list --json
    """
    rows = ctx.client.list_invoices(user)
    if as_json:
        print_json(rows)
        return
    print_table(rows, [("NUMBER", "number"), ("KIND", "kind"), ("USER", "user"), ("MONTH", "month"),
                       ("TOTAL", "total"), ("CURRENCY", "currency"), ("ISSUED", "issued_at"),
                       ("CREDITS", "credits")])


@group.command("show")
@click.argument("number")
@click.option("--month", metavar="YYYY-MM", help="With `draft`: a month not closed yet.")
@click.option("--user", metavar="NAME", help="With `draft`: another user's (admins).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (one row per line, then the total).")
@json_option
@pass_context
def show(ctx, number, month, user, as_csv, as_json):
    """Show invoice NUMBER (or `draft`: what you owe so far this month).

    \b
    Examples:
      slapnode invoice show INV-000042
      slapnode invoice show draft --csv > november.csv
      slapnode invoice show draft --month 2026-10 --json
    """
    view = ctx.client.show_invoice(number, month, user)
    if as_json:
        print_json(view)
        return
    if as_csv:
        click.echo(accounting.to_csv(view), nl=False)
        return
    title = view["number"] or f"draft of {view['month']} (updates until the month is closed)"
    click.echo(printable(f"{view['kind']} {title} for {view['user']}, {view['month']}"
                         + (f", issued {view['issued_at']}" if view.get("issued_at") else "")
                         + (f", credits {view['credits']}" if view.get("credits") else "")))
    if view.get("note"):
        click.echo(printable(f"note: {view['note']}"))
    print_table(view["lines"], [("INSTANCE", "title"), ("KIND", "kind"), ("QUANTITY", "quantity"),
                                ("UNIT", "unit"), ("PRICE", "unit_price"), ("AMOUNT", "amount"),
                                ("DESCRIPTION", "description")])
    click.echo(f"total {view['total']} {view['currency']}")


@group.command("close")
@click.option("--month", required=True, metavar="YYYY-MM", help="A month that has ended.")
@json_option
@pass_context
def close(ctx, month, as_json):
    """Issue the invoices of MONTH now (admins; the master does it on its own after the month).

    \b
    Example:
      slapnode invoice close --month 2026-10
    """
    result = ctx.client.close_invoices(month)
    if as_json:
        print_json(result)
        return
    issued = result["issued"]
    click.echo(f"{month}: {len(issued)} invoice(s) issued" + (f": {', '.join(issued)}" if issued else ""))


@group.command("credit")
@click.argument("number")
@click.option("--reason", required=True, help="Why; printed on the credit note.")
@json_option
@pass_context
def credit(ctx, number, reason, as_json):
    """Cancel invoice NUMBER with a credit note that references it (admins).

    \b
    Example:
      slapnode invoice credit INV-000042 --reason "node was down for a week"
    """
    view = ctx.client.credit_invoice(number, reason)
    if as_json:
        print_json(view)
    else:
        click.echo(f"credit note {view['number']} for {number}: {view['total']} {view['currency']}")

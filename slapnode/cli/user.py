"""``slapnode user``: accounts on the master."""

import click

from .context import json_option, pass_context, print_json


@click.group("user")
def group():
    """Manage users (admins only)."""


@group.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user an admin (may change the catalog).")
@json_option
@pass_context
def add(ctx, name, admin, as_json):
    """Create user NAME and print their token on the last line.

    \b
    Example:
      slapnode user add ada
    """
    result = ctx.client.add_user(name, admin)
    if as_json:
        print_json(result)
        return
    click.echo(f"user {result['name']} created{' (admin)' if result['admin'] else ''}; "
               "their token (shown once):", err=True)
    click.echo(result["token"])


@group.command("whoami")
@json_option
@pass_context
def whoami(ctx, as_json):
    """Show who the token belongs to.

    \b
    Example:
      slapnode user whoami --json
    """
    result = ctx.client.me()
    if as_json:
        print_json(result)
    else:
        click.echo(f"{result['name']}{' (admin)' if result['admin'] else ''}")

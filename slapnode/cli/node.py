"""``slapnode node``: enrolling computers and seeing them."""

import click

from .context import json_option, pass_context, print_json, print_table


@click.group("node")
def group():
    """Computers (nodes): enrollment tokens and the list of nodes."""


@group.group("token")
def token():
    """One-time enrollment tokens."""


@token.command("create")
@click.argument("name")
@json_option
@pass_context
def token_create(ctx, name, as_json):
    """Create a one-time token that enrolls the computer NAME (admins only).

    Give it to the sysadmin; `slapnode node register --token ...` uses it up.

    \b
    Example:
      slapnode node token create volunteer-1
    """
    result = ctx.client.create_enrollment_token(name)
    if as_json:
        print_json(result)
        return
    click.echo(f"enrollment token for {result['name']} (one use, valid "
               f"{result['expires_in_days']} days):", err=True)
    click.echo(result["token"])


@group.command("list")
@json_option
@pass_context
def list_(ctx, as_json):
    """List the computers, their capacity and free partitions.

    \b
    Example:
      slapnode node list --json
    """
    rows = ctx.client.list_computers()
    if as_json:
        print_json(rows)
        return
    print_table(rows, [("NAME", "name"), ("PARTITIONS", "partitions"), ("FREE", "free"),
                       ("CPUS", "cpus"), ("RAM_MB", "ram_mb"), ("DISK_GB", "disk_gb"),
                       ("ARCH", "arch"), ("DISTRIBUTION", "distribution"),
                       ("LAST_SEEN", "last_seen")])

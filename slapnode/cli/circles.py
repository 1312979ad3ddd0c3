"""``slapnode computer``, ``slapnode network`` and ``slapnode group``: whose machines
take whose instances, sets of your computers, and sets of users."""

import click

from . import moments
from .context import json_option, pass_context, print_json, print_table, print_usage, printable

SCOPES = ("personal", "friends", "public", "closed")
COMPUTER_COLUMNS = [("NAME", "name"), ("OWNER", "owner"), ("SCOPE", "scope"), ("FRIENDS", "friends"),
                    ("PARTITIONS", "partitions"), ("FREE", "free"), ("CPUS", "cpus"),
                    ("RAM_MB", "ram_mb"), ("LAST_SEEN", "last_seen")]


def _computer_rows(rows):
    return [{**r, "friends": ", ".join(r.get("friends") or [])} for r in rows]


# -- computers ---------------------------------------------------------------------------

@click.group("computer")
def computer():
    """Computers: yours, those you may use, and whose instances yours take."""


@computer.command("list")
@json_option
@pass_context
def computer_list(ctx, as_json):
    """List your computers and those that take your instances (admins: all).

    \b
    Example:
      slapnode computer list --json
    """
    rows = ctx.client.list_computers()
    if as_json:
        print_json(rows)
        return
    print_table(_computer_rows(rows), COMPUTER_COLUMNS)


@computer.command("show")
@click.argument("name")
@json_option
@pass_context
def computer_show(ctx, name, as_json):
    """Show computer NAME.

    \b
    Example:
      slapnode computer show volunteer-1
    """
    view = ctx.client.show_computer(name)
    if as_json:
        print_json(view)
        return
    for key, value in view.items():
        if isinstance(value, list):
            value = ", ".join(value)
        click.echo(f"{key:16} {printable('-' if value in (None, '') else value)}")


@computer.command("scope")
@click.argument("name")
@click.argument("scope", type=click.Choice(SCOPES))
@click.option("--group", "groups", multiple=True, metavar="GROUP",
              help="With friends: a group whose members may allocate (repeat for more).")
@json_option
@pass_context
def computer_scope(ctx, name, scope, groups, as_json):
    """Say whose instances your computer NAME takes.

    \b
    personal  yours only (the default)
    friends   yours and those of the members of the groups you name
    public    anyone's
    closed    no new instances; those it has stay

    \b
    Examples:
      slapnode computer scope lab-pc friends --group physics
      slapnode computer scope volunteer-1 public
      slapnode computer scope volunteer-1 closed
    """
    view = ctx.client.set_scope(name, scope, list(groups) if groups else None)
    if as_json:
        print_json(view)
        return
    friends = f" (groups: {', '.join(view['friends'])})" if view["scope"] == "friends" else ""
    click.echo(printable(f"computer {view['name']}: scope {view['scope']}{friends}"))


@computer.command("usage")
@click.argument("name")
@click.option("--since", metavar="WHEN", default="1d", show_default=True,
              help="From WHEN: 7d, 12h, 2w back, or a date.")
@json_option
@pass_context
def computer_usage(ctx, name, since, as_json):
    """Show what your computer NAME gave, hour by hour, over all its partitions.

    \b
    Example:
      slapnode computer usage volunteer-1 --since 30d
    """
    points = ctx.client.computer_usage(name, moments.parse(since, "--since", future=False).isoformat())
    if as_json:
        print_json(points)
    else:
        print_usage(points)


@computer.command("credit")
@click.argument("name", required=False)
@click.option("--month", metavar="YYYY-MM", help="One month only (default: the 13 months kept).")
@json_option
@pass_context
def computer_credit(ctx, name, month, as_json):
    """Show the credit your computers (or computer NAME) earned for other users' work.

    1 credit per CPU-hour and 0.25 per GB-hour of memory given to instances of users other
    than the computer's owner (docs/accounting.md).

    \b
    Examples:
      slapnode computer credit
      slapnode computer credit volunteer-1 --month 2026-10
    """
    rows = ctx.client.computer_credit(name, month)
    if as_json:
        print_json(rows)
        return
    print_table(rows, [("COMPUTER", "computer"), ("OWNER", "owner"), ("CPU_HOURS", "cpu_hours"),
                       ("MEMORY_GB_HOURS", "memory_gb_hours"), ("CREDIT", "credit")])


@click.group("credit")
def credit_group():
    """Volunteer credit: who gave the most."""


@credit_group.command("top")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--month", metavar="YYYY-MM", help="One month only (default: the 13 months kept).")
@json_option
@pass_context
def credit_top(ctx, limit, month, as_json):
    """Show the leaderboard of owners by the credit their computers earned.

    \b
    Example:
      slapnode credit top --limit 10
    """
    rows = ctx.client.credit_top(limit, month)
    if as_json:
        print_json(rows)
        return
    print_table(rows, [("RANK", "rank"), ("OWNER", "owner"), ("COMPUTERS", "computers"),
                       ("CPU_HOURS", "cpu_hours"), ("MEMORY_GB_HOURS", "memory_gb_hours"),
                       ("CREDIT", "credit")])


# -- networks ----------------------------------------------------------------------------

@click.group("network")
def network():
    """Networks: named sets of your computers, to request onto (--node network=NAME)."""


@network.command("create")
@click.argument("name")
@pass_context
def network_create(ctx, name):
    """Create your network NAME.

    \b
    Example:
      slapnode network create lab
    """
    ctx.client.create_network(name)
    click.echo(f"network {name} created")


@network.command("add")
@click.argument("name")
@click.argument("computers", nargs=-1, required=True)
@pass_context
def network_add(ctx, name, computers):
    """Add your COMPUTERS to network NAME.

    \b
    Example:
      slapnode network add lab pc-1 pc-2
    """
    for computer_name in computers:
        ctx.client.add_network_computer(name, computer_name)
    click.echo(f"network {name}: added {', '.join(computers)}")


@network.command("remove")
@click.argument("name")
@click.argument("computers", nargs=-1, required=True)
@pass_context
def network_remove(ctx, name, computers):
    """Remove COMPUTERS from network NAME (their instances stay).

    \b
    Example:
      slapnode network remove lab pc-2
    """
    for computer_name in computers:
        ctx.client.remove_network_computer(name, computer_name)
    click.echo(f"network {name}: removed {', '.join(computers)}")


@network.command("list")
@json_option
@pass_context
def network_list(ctx, as_json):
    """List your networks and their computers.

    \b
    Example:
      slapnode network list --json
    """
    rows = ctx.client.list_networks()
    if as_json:
        print_json(rows)
        return
    print_table([{**r, "computers": ", ".join(r["computers"])} for r in rows],
                [("NAME", "name"), ("COMPUTERS", "computers"), ("CREATED", "created_at")])


# -- groups ------------------------------------------------------------------------------

@click.group("group")
def group_group():
    """Groups: named sets of users, for shared instances and friends' computers."""


@group_group.command("create")
@click.argument("name")
@pass_context
def group_create(ctx, name):
    """Create group NAME; you own it and are its first member.

    \b
    Example:
      slapnode group create physics
    """
    ctx.client.create_group(name)
    click.echo(f"group {name} created")


@group_group.command("add")
@click.argument("name")
@click.argument("users", nargs=-1, required=True)
@pass_context
def group_add(ctx, name, users):
    """Add USERS to your group NAME.

    \b
    Example:
      slapnode group add physics ada grace
    """
    for user in users:
        ctx.client.add_group_member(name, user)
    click.echo(f"group {name}: added {', '.join(users)}")


@group_group.command("remove")
@click.argument("name")
@click.argument("users", nargs=-1, required=True)
@pass_context
def group_remove(ctx, name, users):
    """Remove USERS from your group NAME.

    \b
    Example:
      slapnode group remove physics grace
    """
    for user in users:
        ctx.client.remove_group_member(name, user)
    click.echo(f"group {name}: removed {', '.join(users)}")


@group_group.command("list")
@json_option
@pass_context
def group_list(ctx, as_json):
    """List the groups you own or belong to.

    \b
    Example:
      slapnode group list --json
    """
    rows = ctx.client.list_groups()
    if as_json:
        print_json(rows)
        return
    print_table([{**r, "members": ", ".join(r["members"])} for r in rows],
                [("NAME", "name"), ("OWNER", "owner"), ("MEMBERS", "members")])

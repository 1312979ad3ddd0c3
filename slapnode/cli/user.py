"""``slapnode user`` and ``slapnode token``: accounts on the master and your tokens."""

import click

from . import moments
from .context import json_option, pass_context, print_json, print_table


@click.group("user")
def group():
    """Users: add, list, disable (admins), and who you are."""


@group.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user an admin (may change the catalog).")
@click.option("--email", default="", metavar="ADDRESS", help="Their e-mail address.")
@json_option
@pass_context
def add(ctx, name, admin, email, as_json):
    """Create user NAME and print their token on the last line (admins only).

    \b
    Example:
      slapnode user add ada --email ada@example.org
    """
    result = ctx.client.add_user(name, admin, email)
    if as_json:
        print_json(result)
        return
    click.echo(f"user {result['name']} created{' (admin)' if result['admin'] else ''}; "
               "their token (shown once):", err=True)
    click.echo(result["token"])


@group.command("list")
@json_option
@pass_context
def list_(ctx, as_json):
    """List the users (admins only).

    \b
    Example:
      slapnode user list --json
    """
    rows = ctx.client.list_users()
    if as_json:
        print_json(rows)
        return
    print_table(rows, [("NAME", "name"), ("EMAIL", "email"), ("ADMIN", "admin"),
                       ("DISABLED", "disabled"), ("PASSWORD", "password"), ("CREATED", "created_at")])


def _switch(name, disabled, doc):
    @group.command(name, help=doc)
    @click.argument("user")
    @json_option
    @pass_context
    def command(ctx, user, as_json):
        result = ctx.client.change_user(user, disabled=disabled)
        if as_json:
            print_json(result)
        else:
            click.echo(f"user {result['name']} {'disabled' if result['disabled'] else 'enabled'}")
    return command


disable = _switch("disable", True, "Disable USER (admins only): their instances keep running; they "
                  "can no longer request or change anything.\n\n\b\nExample:\n  slapnode user disable ada")
enable = _switch("enable", False, "Enable USER again (admins only).\n\n\b\nExample:\n"
                 "  slapnode user enable ada")


@group.command("password")
@click.argument("user")
@click.option("--password-stdin", "from_stdin", is_flag=True,
              help="Read the password from standard input (one line) instead of a prompt.")
@pass_context
def password(ctx, user, from_stdin):
    """Set USER's password for the web sign-in (yours, or anyone's for an admin).

    Stored as an argon2id hash only; at least 10 characters.

    \b
    Examples:
      slapnode user password ada
      printf '%s\\n' "$PW" | slapnode user password ada --password-stdin
    """
    if from_stdin:
        value = click.get_text_stream("stdin").readline().rstrip("\n")
    else:
        value = click.prompt("new password", hide_input=True, confirmation_prompt=True)
    ctx.client.set_password(user, value)
    click.echo(f"password of {user} set")


@group.command("invite")
@click.argument("name")
@json_option
@pass_context
def invite(ctx, name, as_json):
    """Print a one-time link with which user NAME sets their password (admins only).

    The link works once, for 7 days; a new one replaces it. Send it to them
    yourself: whoever holds it can set the password.

    \b
    Example:
      slapnode user invite ada
    """
    result = ctx.client.invite_user(name)
    result["url"] = ctx.client.master.rstrip("/") + result["path"]
    if as_json:
        print_json(result)
        return
    click.echo(f"one-time link for {name}, valid until {result['expires_at']} (shown once):", err=True)
    click.echo(result["url"])


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


# -- tokens ------------------------------------------------------------------------------

@click.group("token")
def token_group():
    """Your API tokens: one per machine or script, each revocable on its own."""


@token_group.command("create")
@click.argument("name")
@click.option("--expires", metavar="WHEN", help="30d, 12h, 90m, 2w, or a date (UTC unless it says).")
@json_option
@pass_context
def token_create(ctx, name, expires, as_json):
    """Create token NAME and print it on the last line (shown once).

    \b
    Examples:
      slapnode token create laptop
      slapnode token create ci-job --expires 30d
    """
    expires_at = moments.parse(expires, "--expires").isoformat() if expires else None
    result = ctx.client.create_token(name, expires_at)
    if as_json:
        print_json(result)
        return
    until = f", until {result['expires_at']}" if result.get("expires_at") else ""
    click.echo(f"token {result['name']} created{until}; shown once:", err=True)
    click.echo(result["token"])


@token_group.command("list")
@json_option
@pass_context
def token_list(ctx, as_json):
    """List your tokens (names and dates; never the tokens themselves).

    \b
    Example:
      slapnode token list --json
    """
    rows = ctx.client.list_tokens()
    if as_json:
        print_json(rows)
        return
    print_table(rows, [("NAME", "name"), ("CREATED", "created_at"), ("EXPIRES", "expires_at"),
                       ("EXPIRED", "expired")])


@token_group.command("revoke")
@click.argument("name")
@pass_context
def token_revoke(ctx, name):
    """Revoke your token NAME: it stops working at once.

    \b
    Example:
      slapnode token revoke laptop
    """
    ctx.client.revoke_token(name)
    click.echo(f"token {name} revoked")


@click.command("login")
@click.argument("url")
@click.option("--ca-fingerprint", metavar="SHA256:…",
              help="The master's CA fingerprint (`master init` prints it): its CA is fetched, "
                   "checked and pinned for this master.")
@pass_context
def login(ctx, url, ca_fingerprint):
    """Remember the master at URL, your token (--token or SLAPNODE_TOKEN) and its CA in
    the client config, so that later commands need no flags.

    \b
    Example:
      slapnode --token snu_... login https://master.example:8480 --ca-fingerprint SHA256:3f…
    """
    from .. import client as client_mod
    from ..errors import UsageError
    from ..pinning import take_ca

    url = url.rstrip("/")
    token = ctx._token or __import__("os").environ.get("SLAPNODE_TOKEN")
    if not token:
        raise UsageError("give your token: slapnode --token snu_... login URL (or SLAPNODE_TOKEN)")
    path = client_mod.client_config_path()
    ca = None
    if ca_fingerprint:
        host = url.split("://", 1)[-1].replace(":", "-").replace("/", "-")
        ca = take_ca(url, ca_fingerprint, path.parent / f"ca-{host}.pem")
    elif url.startswith("http://"):
        click.echo("warning: plain HTTP: your token crosses the network readable", err=True)
    who = client_mod.Client(url, token, ca_file=ca).me()
    client_mod.write_client_config(url, token, ca=ca)
    click.echo(f"logged in to {url} as {who['name']}; saved in {path}"
               + (f" with its CA pinned ({ca})" if ca else ""))

"""The ``slapnode`` command: click groups over the library modules.

Owns the top-level group, the global ``--master``/``--token`` options and the
one place where failures become one line on stderr and an exit code:
0 success, 2 usage error, 1 anything else. Never a traceback (unless
``SLAPNODE_DEBUG=1``).
"""

import os
import sys

import click

from .. import __version__
from ..errors import SlapnodeError
from .context import Context, printable
from . import circles, instance, invoice, master, node, software, standalone, user

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("--master", "master_url", metavar="URL", envvar="SLAPNODE_MASTER",
              help="The master's URL (or SLAPNODE_MASTER, or the client config file).")
@click.option("--token", metavar="TOKEN", envvar="SLAPNODE_TOKEN",
              help="Your API token (or SLAPNODE_TOKEN, or the client config file).")
@click.version_option(__version__, prog_name="slapnode")
@click.pass_context
def cli(ctx, master_url, token):
    """slapnode: run software in partitions of enrolled machines.

    \b
    Examples:
      slapnode master init --data-dir /var/lib/slapnode/master
      slapnode --master http://127.0.0.1:8480 --token snu_... software list
      slapnode instance request my-hello hello --parameter name=Ada --wait 30

    The client config file (~/.config/slapnode/client.cfg, or SLAPNODE_CLIENT_CONFIG)
    holds `master =` and `token =` under [client].
    """
    ctx.obj = Context(master_url, token)


for module in (master, user, software, node, instance, invoice, standalone):
    cli.add_command(module.group)
for command in (user.token_group, user.login, circles.computer, circles.network, circles.group_group,
                circles.credit_group):
    cli.add_command(command)


def main(argv=None):
    """Entry point: run the CLI, turn every failure into one line and an exit code."""
    debug = os.environ.get("SLAPNODE_DEBUG") == "1"
    try:
        cli.main(args=argv, prog_name="slapnode", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SlapnodeError as exc:
        if debug:
            raise
        click.echo(f"Error: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:    # a bug: still one line, the traceback on demand
        if debug:
            raise
        click.echo(f"Error: internal error: {type(exc).__name__}: {one_line(exc)} "
                   "(run again with SLAPNODE_DEBUG=1 for the traceback, and report it)", err=True)
        sys.exit(1)
    sys.exit(0)


def one_line(exc):
    """An error message as one printable line, whatever it carries."""
    return printable(" ".join(str(exc).split("\n")).replace("\r", " "))

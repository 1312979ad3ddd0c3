"""``slapnode standalone``: a master and this machine as its node, in one command."""

import click


@click.command("standalone")
@click.option("--data-dir", default="/var/lib/slapnode/standalone", show_default=True,
              type=click.Path(file_okay=False), help="Everything lives here.")
@click.option("--listen", default="127.0.0.1:8480", show_default=True, metavar="HOST:PORT")
@click.option("--partitions", type=click.IntRange(1, 4000), help="How many partitions [4].")
@click.option("--isolation", type=click.Choice(["lxc", "user"]),
              help="lxc (the default where LXC is installed) or user.")
@click.option("--user-prefix", help="Partition users' prefix [slapuser] (first run only).")
@click.option("--bridge", help="The node's bridge [slapbr0] (first run only).")
@click.option("--ipv4-range", metavar="CIDR", help="Partitions' IPv4 range (first run only).")
def group(data_dir, listen, partitions, isolation, user_prefix, bridge, ipv4_range):
    """Run a master and this machine as its node, in the foreground until interrupted.

    Registers and formats the node, supplies the shipped releases, writes a client
    config and prints the two `export` lines, so that `slapnode instance request …`
    works from another shell with no flags.

    \b
    Example:
      slapnode standalone --partitions 10
      slapnode instance request my-hello hello --parameter name=Ada --wait 60   # elsewhere
    """
    import os

    from .context import printable

    from .. import standalone
    from ..agent import Daemon
    from ..errors import UsageError
    from .master import parse_listen

    parse_listen(listen)
    if os.geteuid() != 0:
        raise UsageError("standalone needs root (it makes partition users and interfaces)")
    say = lambda message: click.echo(printable(message), err=True)
    names = {"user_prefix": user_prefix, "bridge": bridge, "ipv4_range": ipv4_range}
    process, config, node = standalone.prepare(data_dir, listen, partitions, isolation, say, names)
    from pathlib import Path

    daemon = Daemon(config, node, say, poll_wait=30, config_path=Path(data_dir) / "node.cfg")
    daemon.handle_signals()
    say("node daemon running; Ctrl-C stops everything")
    try:
        daemon.run()
    finally:
        standalone.stop_instances(config, say)
        process.terminate()
        try:
            process.wait(10)
        except Exception:
            process.kill()
            process.wait(5)
        say("master stopped")

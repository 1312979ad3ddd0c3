"""``slapnode instance``: request instances and follow them."""

import sys
import time

import click

from ..errors import ParameterError, SlapnodeError, UsageError
from ..states import DESTROYED, REQUESTED_STATES, STARTED, STOPPED, InstanceStatus, settled_for
from . import moments
from .context import json_option, pass_context, print_json, print_table, print_usage, printable


@click.group("instance")
def group():
    """Request instances of software releases and see their connection parameters."""


def _params():
    from .. import params       # lxml: imported only by the commands that parse XML

    return params


def _read_source(path, what):
    if path == "-":
        return sys.stdin.buffer.read(_params().MAX_BYTES + 1)
    try:
        with open(path, "rb") as stream:
            return stream.read(_params().MAX_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None


def collect_parameters(pairs, xml_path, json_path):
    """Merge --parameter, --parameters-xml and --parameters-json; a repeated key is an error."""
    if xml_path and json_path:
        raise UsageError("give --parameters-xml or --parameters-json, not both")
    params = _params()
    merged = {}
    if xml_path:
        merged = params.parse_xml(_read_source(xml_path, "--parameters-xml"), source=xml_path)
    elif json_path:
        merged = params.parse_json(_read_source(json_path, "--parameters-json"), source=json_path)
    for key, value in params.parse_pairs(pairs).items():
        if key in merged:
            raise ParameterError(f"parameter {key!r} is given twice (--parameter and a file)")
        merged[key] = value
    return merged


def _print_instance(view):
    where = f" on {view['node']}/{view['partition']}" if view.get("partition") else ""
    reason = f": {view['reason']}" if view.get("reason") else ""
    click.echo(printable(f"instance {view['title']!r}: {view['status']}{where} "
                         f"(requested {view['state']}){reason}"))
    if view["status"] == InstanceStatus.READY and view.get("connection"):
        click.echo("connection parameters:")
        for key in sorted(view["connection"]):
            click.echo(f"  {printable(key)} = {printable(view['connection'][key])}")


def wait_until_settled(client, title, view, seconds, owner=None):
    """Long-poll the master until the instance settles or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while not settled_for(view["state"], view["status"]):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SlapnodeError(f"instance {title!r} is still {view['status']} after {seconds:g} s; "
                                f"follow it with `slapnode instance show {title}`")
        view = client.show_instance(title, wait=min(remaining, 60), owner=owner)
    return view


def owner_option(fn):
    return click.option("--owner", metavar="USER",
                        help="An instance of USER in one of your groups (default: yours).")(fn)


def _finish(ctx, view, wait, as_json, owner=None):
    if wait:
        view = wait_until_settled(ctx.client, view["title"], view, wait, owner)
    if as_json:
        print_json(view)
    else:
        _print_instance(view)
    if wait and view["status"] == InstanceStatus.ERROR:
        raise SlapnodeError(f"instance {view['title']!r} is in error: {view.get('reason') or 'no reason given'}")


def _pairs_to_filter(pairs):
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--node {pair!r}: expected KEY=VALUE, e.g. computer=volunteer-1")
        if key in result:
            raise UsageError(f"--node {key!r} is given twice")
        result[key] = value
    return result


@group.command("request")
@click.argument("title")
@click.argument("software")
@click.option("--type", "software_type", default="default", show_default=True,
              help="Software type (which instance profile of the release).")
@click.option("--parameter", "pairs", multiple=True, metavar="KEY=VALUE",
              help="One parameter; repeat for more.")
@click.option("--parameters-xml", "xml_path", metavar="FILE|-",
              help="SlapOS parameter XML (plain or JSON-in-XML `_`).")
@click.option("--parameters-json", "json_path", metavar="FILE|-", help="Parameters as a JSON object.")
@click.option("--node", "node_pairs", multiple=True, metavar="KEY=VALUE",
              help="Node filter: computer=NAME, network=NAME, min-ram-mb=N, min-cpus=N, arch=..., ...")
@click.option("--group", "group_name", metavar="GROUP",
              help="Let the members of GROUP (one of yours) see and manage it.")
@click.option("--version", "version", metavar="VERSION",
              help="This version of SOFTWARE (default: the newest for a new instance; an "
                   "existing one keeps its version unless given one: then it is upgraded in place).")
@click.option("--shared", is_flag=True, help="Attach to a host instance instead of taking a partition.")
@click.option("--share-with", "share_with", multiple=True, metavar="USER|*",
              help="As a host: who may attach shared instances to this one (repeat; '*' for "
                   "everyone). Default: only you.")
@click.option("--state", type=click.Choice(REQUESTED_STATES), default=STARTED, show_default=True)
@click.option("--move", is_flag=True,
              help="The instance's node is lost (status unreachable): give it a partition on "
                   "another node (--node chooses where).")
@click.option("--wait", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
              help="Wait until ready (or error); exit 1 on time-out.")
@json_option
@pass_context
def request(ctx, title, software, software_type, pairs, xml_path, json_path, node_pairs,
            group_name, version, shared, share_with, state, move, wait, as_json):
    """Request instance TITLE of SOFTWARE (a catalog URL or title).

    The same request again changes nothing; a changed one updates the instance.

    \b
    Examples:
      slapnode instance request my-hello hello --parameter name=Ada --wait 30
      slapnode instance request worker-1 boinc-client --parameters-xml boinc.xml
      slapnode instance request cache redis --node computer=volunteer-1 --json
      slapnode instance request worker-7 boinc-client --node network=lab --group physics
      slapnode instance request my-hello hello --version 2.0     # upgrade in place
      slapnode instance request front frontend --share-with alice --share-with bob
      slapnode instance request worker-3 condor --move --wait 60   # its node is lost
    """
    parameters = collect_parameters(pairs, xml_path, json_path)
    body = {"title": title, "software": software, "type": software_type,
            "parameters": parameters, "shared": shared, "node": _pairs_to_filter(node_pairs),
            "state": state}
    if share_with:
        body["share_with"] = list(share_with)
    if group_name:
        body["group"] = group_name
    if version:
        body["version"] = version
    if move:
        body["move"] = True
    view = ctx.client.request_instance(**body)
    _finish(ctx, view, wait, as_json)


@group.command("list")
@json_option
@pass_context
def list_(ctx, as_json):
    """List your instances, then those of your groups.

    \b
    Example:
      slapnode instance list --json
    """
    rows = ctx.client.list_instances()
    if as_json:
        print_json(rows)
        return
    print_table(rows, [("TITLE", "title"), ("STATUS", "status"), ("STATE", "state"),
                       ("NODE", "node"), ("PARTITION", "partition"), ("TYPE", "type"),
                       ("OWNER", "owner"), ("GROUP", "group"), ("SOFTWARE", "software")])


@group.command("show")
@click.argument("title")
@click.option("--xml", "as_xml", is_flag=True, help="Print the connection parameters as SlapOS XML.")
@owner_option
@json_option
@pass_context
def show(ctx, title, as_xml, owner, as_json):
    """Show one instance, with its parameters and connection parameters.

    \b
    Examples:
      slapnode instance show my-hello --json
      slapnode instance show worker-7 --owner alice
    """
    view = ctx.client.show_instance(title, owner=owner)
    if as_json:
        print_json(view)
        return
    if as_xml:
        click.echo(_params().to_xml(view.get("connection") or {}), nl=False)
        return
    for key in ("title", "owner", "group", "software", "type", "state", "status", "reason", "node",
                "partition", "ipv4", "ipv6", "host"):
        if view.get(key) not in (None, ""):
            click.echo(f"{key:12} {printable(view[key])}")
    if view.get("share_with"):
        click.echo(f"{'share with':12} {printable(', '.join(view['share_with']))}")
    if view.get("node_filter"):
        click.echo(f"{'targets':12} " + printable(", ".join(
            f"{k}={v}" for k, v in sorted(view["node_filter"].items()))))
    for section in ("parameters", "connection"):
        click.echo(f"{section}:")
        values = view.get(section) or {}
        for key in sorted(values):
            click.echo(f"  {printable(key)} = {printable(values[key])}")
    if view.get("usage"):
        u = view["usage"]
        click.echo(f"usage        cpu {u.get('cpu_seconds', 0)} s, memory {u.get('memory_mb', 0)} MB, "
                   f"disk {u.get('disk_mb', 0)} MB")
    if view.get("promises"):
        click.echo("promises:")
        for promise in view["promises"]:
            click.echo(printable(f"  {'ok  ' if promise['ok'] else 'FAIL'} {promise['name']} "
                                 f"{promise.get('message', '')}"))


def _state_command(name, state, doc):
    @group.command(name, help=doc)
    @click.argument("title")
    @click.option("--wait", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
                  help="Wait until the node has done it; exit 1 on time-out.")
    @owner_option
    @json_option
    @pass_context
    def command(ctx, title, wait, owner, as_json):
        view = ctx.client.change_instance(title, state, owner)
        _finish(ctx, view, wait, as_json, owner)
    return command


start = _state_command("start", STARTED, "Start instance TITLE again.\n\n\b\nExample:\n  slapnode instance start my-hello")
stop = _state_command("stop", STOPPED, "Stop instance TITLE, keeping its files.\n\n\b\nExample:\n  slapnode instance stop my-hello")
destroy = _state_command("destroy", DESTROYED, "Destroy instance TITLE and free its partition.\n\n\b\nExample:\n  slapnode instance destroy my-hello")


@group.command("history")
@click.argument("title")
@owner_option
@json_option
@pass_context
def history(ctx, title, owner, as_json):
    """Show every change to instance TITLE: when, who, what.

    Parameter and connection values are never in it, only their names.

    \b
    Example:
      slapnode instance history my-hello
    """
    events = ctx.client.instance_history(title, owner)
    if as_json:
        print_json(events)
        return
    rows = [{**e, "detail": ", ".join(f"{k}={v}" for k, v in sorted(e["detail"].items())
                                      if v not in (None, "", [], {}))} for e in events]
    print_table(rows, [("AT", "at"), ("WHO", "actor"), ("WHAT", "action"), ("DETAIL", "detail")])


@group.command("usage")
@click.argument("title")
@click.option("--raw", is_flag=True, help="Raw samples (kept 48 h) instead of hourly figures.")
@click.option("--since", metavar="WHEN", default="1d", show_default=True,
              help="From WHEN: 7d, 12h, 2w back, or a date.")
@owner_option
@json_option
@pass_context
def usage(ctx, title, raw, since, owner, as_json):
    """Show what instance TITLE used over time: CPU, memory, disk, network.

    Hourly figures are kept 13 months; CPU seconds and network bytes are per hour.

    \b
    Examples:
      slapnode instance usage worker-1 --since 7d
      slapnode instance usage worker-1 --raw --json
    """
    start = moments.parse(since, "--since", future=False).isoformat()
    points = ctx.client.instance_usage(title, owner, "raw" if raw else "hourly", start)
    if as_json:
        print_json(points)
    else:
        print_usage(points, raw)

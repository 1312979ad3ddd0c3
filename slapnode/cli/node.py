"""``slapnode node``: enrolling computers and seeing them."""

import click

from ..errors import UsageError
from .circles import SCOPES
from .context import json_option, pass_context, print_json, print_table, printable


@click.group("node")
def group():
    """Computers (nodes): enrollment tokens and the list of nodes."""


@group.group("token")
def token():
    """One-time enrollment tokens."""


@token.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(SCOPES), default=None,
              help="Whose instances the computer takes once enrolled (default: personal, yours "
                   "only; see `slapnode computer scope`).")
@json_option
@pass_context
def token_create(ctx, name, scope, as_json):
    """Create a one-time token that enrolls the computer NAME as yours.

    Run `slapnode node register --token ...` with it on the machine; it is used up.
    Re-enrolling an existing computer takes its owner (or an admin).

    \b
    Examples:
      slapnode node token create volunteer-1
      slapnode node token create lab-pc --scope public
    """
    result = ctx.client.create_enrollment_token(name, scope)
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
    """List the computers you may use (all of them for admins), their capacity and free partitions.

    \b
    Example:
      slapnode node list --json
    """
    rows = ctx.client.list_computers()
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["now"] = "lost" if row.get("lost") else \
            (row.get("availability") or {}).get("state", "running")
    print_table(rows, [("NAME", "name"), ("OWNER", "owner"), ("SCOPE", "scope"), ("NOW", "now"),
                       ("PARTITIONS", "partitions"), ("FREE", "free"), ("CPUS", "cpus"), ("RAM_MB", "ram_mb"), ("DISK_GB", "disk_gb"),
                       ("ARCH", "arch"), ("DISTRIBUTION", "distribution"),
                       ("LAST_SEEN", "last_seen")])


# -- this machine as a node ------------------------------------------------------------

def config_option(fn):
    return click.option("--config", "config_path", metavar="PATH", envvar="SLAPNODE_CONFIG",
                        help="Node config (default /etc/slapnode/node.cfg, or SLAPNODE_CONFIG).")(fn)


def node_client(config):
    from ..client import Client

    if not config.master or not config.credential:
        return None
    return Client(config.master, config.credential, ca_file=config.ca_file or None)


@group.command("discover")
@click.option("--seconds", type=click.FloatRange(0.5, 60), default=3, show_default=True,
              help="How long to listen.")
@json_option
def discover(seconds, as_json):
    """List the masters announced on this LAN (multicast DNS, `master serve --advertise`).

    What a LAN announces is not authenticated: compare the fingerprint with the one the
    master's admin gave you before you register with `--discover NAME`.

    \b
    Example:
      slapnode node discover --json
    """
    from .. import discovery

    found = discovery.browse(seconds)
    rows = [{"name": f.name, "url": f.url, "ca_fingerprint": f.fingerprint}
            for f in found.values()]
    if as_json:
        print_json(rows)
    elif not rows:
        click.echo(f"no master announced itself on this LAN in {seconds:g} s (is it served "
                   "with --advertise, and is multicast allowed here?)", err=True)
    else:
        print_table(rows, [("NAME", "name"), ("URL", "url"), ("CA FINGERPRINT", "ca_fingerprint")])


def _discovered(name, ca_fingerprint, seconds=3.0):
    """(URL, fingerprint to pin) of the master announced as ``name`` on the LAN."""
    from .. import discovery

    found = discovery.browse(seconds)
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise UsageError(f"no master named {name!r} announced itself on this LAN in "
                         f"{seconds:g} s (found: {known}); see `slapnode node discover`")
    master = found[name]
    if ca_fingerprint and master.fingerprint and \
            ca_fingerprint.lower() != master.fingerprint.lower():
        raise UsageError(f"master {name!r} announces CA {master.fingerprint}, not the "
                         f"{ca_fingerprint} you gave: check with its admin")
    return master.url, ca_fingerprint or master.fingerprint or None


@group.command("register")
@click.option("--master", "master_url", metavar="URL", help="The master's URL.")
@click.option("--discover", "discover_name", metavar="NAME",
              help="Instead of --master: the master announced as NAME on this LAN (its CA "
                   "fingerprint too, unless --ca-fingerprint is given; see `node discover`).")
@click.option("--token", required=True, metavar="TOKEN",
              help="One-time enrollment token from `slapnode node token create`.")
@click.option("--name", help="This computer's name (must match the token's).")
@config_option
@click.option("--partitions", type=click.IntRange(0, 4000), help="How many partitions [4].")
@click.option("--user-prefix", help="Partition users are PREFIX0, PREFIX1, ... [slapuser].")
@click.option("--instance-root", type=click.Path(), help="Partition directories [/srv/slapnode].")
@click.option("--software-root", type=click.Path(), help="Built software [/opt/slapnode/software].")
@click.option("--state-dir", type=click.Path(),
              help="This node's local state [/var/lib/slapnode; beside --config for another config].")
@click.option("--bridge", help="Bridge for the partitions' addresses [slapbr0].")
@click.option("--ipv4-range", metavar="CIDR", help="Private IPv4 range [a free 10.x/16].")
@click.option("--ipv6-range", metavar="CIDR",
              help="IPv6 range [inside the machine's global prefix, else a ULA /64].")
@click.option("--isolation", type=click.Choice(["lxc", "user"]),
              help="lxc (the default where LXC is installed) or user.")
@click.option("--ca-fingerprint", metavar="SHA256:…",
              help="The master's CA fingerprint (`master init` prints it): its CA is fetched, "
                   "checked and pinned; this node then trusts only it for the master.")
def register(master_url, discover_name, token, name, config_path, ca_fingerprint, **options):
    """Enroll this machine with the master and write the node config.

    Exchanges the one-time TOKEN for a node credential (kept in the config, 0600) and
    reports the machine's capacity. Then run `slapnode node format`.

    \b
    Example:
      slapnode node register --master https://master.example:8480 --token sne_... \
          --ca-fingerprint SHA256:3f… --partitions 10
      slapnode node register --discover lab-master --token sne_...
    """
    from ..node import register as do_register

    if bool(master_url) == bool(discover_name):
        raise UsageError("give the master with --master URL, or --discover NAME to find it on "
                         "this LAN (`slapnode node discover` lists them)")
    if discover_name:
        master_url, ca_fingerprint = _discovered(discover_name, ca_fingerprint)
        click.echo(f"found {discover_name} at {master_url}"
                   + (f", CA {ca_fingerprint} (compare it with the one its admin gave)"
                      if ca_fingerprint else ""), err=True)

    config, path, notes = do_register.register(master_url, token, name, config_path, options,
                                               ca_fingerprint)
    for note in notes:
        click.echo(note, err=True)
    click.echo(f"enrolled as {config.name}; node config written to {path} (mode 0600)")
    click.echo("next: slapnode node format" + (f" --config {path}" if config_path else ""))


@group.command("format")
@config_option
@click.option("--remove", is_flag=True, help="Remove everything format made (same as unformat).")
@json_option
def format_(config_path, remove, as_json):
    """Make this machine's partitions match the node config, and tell the master.

    Creates the partition users and directories, the bridge and the addresses; grows or
    shrinks (only free partitions) to the configured count. Safe to run again.

    \b
    Example:
      slapnode node format
      slapnode node format --config /etc/slapnode/node.cfg --json
    """
    _format(config_path, remove, as_json)


@group.command("unformat")
@config_option
@click.option("--force", is_flag=True,
              help="Do not ask the master whether partitions are free (it is gone for good).")
@json_option
def unformat(config_path, force, as_json):
    """Remove what format made: partitions, users, addresses, the bridge, the software root.

    Refuses while a partition holds an instance (the master is asked) or runs processes.

    \b
    Example:
      slapnode node unformat
    """
    _format(config_path, True, as_json, force)


def _format(config_path, remove, as_json, force=False):
    import time

    from .. import format as fmt
    from .. import nodeconfig
    from ..errors import SlapnodeError

    started = time.monotonic()
    config = nodeconfig.load(config_path)
    say = (lambda m: None) if as_json else (lambda m: click.echo(printable(m), err=True))
    outcome = fmt.reconcile(config, node_client(config), remove_all=remove, progress=say,
                            force=force)
    took = time.monotonic() - started
    if as_json:
        print_json({"partitions": len(outcome.partitions), "added": outcome.added,
                    "removed": outcome.removed, "addresses_added": outcome.addresses_added,
                    "addresses_removed": outcome.addresses_removed, "reported": outcome.reported,
                    "report_error": outcome.report_error or None, "seconds": round(took, 3)})
    else:
        what = "unformatted" if remove else (
            f"{len(outcome.partitions)} partitions ready" if outcome.changed else
            f"{len(outcome.partitions)} partitions already up to date")
        click.echo(f"{what} in {took:.2f} s ({outcome.addresses_added} addresses added, "
                   f"{outcome.addresses_removed} removed)")
    if outcome.report_error and force:
        click.echo(f"warning: the master did not take the report ({outcome.report_error})", err=True)
    elif outcome.report_error:
        raise SlapnodeError(f"formatted locally, but the master did not take the report: "
                            f"{outcome.report_error}; run `slapnode node format` again")


@group.command("status")
@config_option
@json_option
def status(config_path, as_json):
    """Show this node's partitions: users, addresses, and whether each is free or busy.

    \b
    Example:
      slapnode node status --json
    """
    from .. import format as fmt
    from .. import nodeconfig

    config = nodeconfig.load(config_path)
    rows, master_error = fmt.status(config, node_client(config))
    _add_runtime(config, rows)
    live = _live(config)
    if as_json:
        print_json({"node": config.name, "isolation": config.isolation, "bridge": config.bridge,
                    "master_error": master_error or None, "policy": config.policy.as_dict(),
                    "now": live, "partitions": rows})
        return
    click.echo(f"node {config.name} (isolation {config.isolation}, bridge {config.bridge})")
    p = config.policy
    click.echo(f"policy: cpu {p.cpu_limit_pct:g}% of the machine, memory "
               f"{p.memory_limit_mb or 'unlimited'} MB, run {p.run_when}"
               + (f", hours {p.hours}" if p.hours else "")
               + (f", at most {p.max_instances} instances" if p.max_instances else "")
               + f"; now {live['state']}" + (f" ({live['reason']})" if live["reason"] else ""))
    if config.isolation == "user":
        click.echo("isolation = user: partitions are separate users only, without containers",
                   err=True)
    if master_error:
        click.echo(f"master unreachable ({master_error}): free/busy unknown", err=True)
    print_table([{**r, "formatted": "yes" if r["formatted"] else "NO",
                  "services": " ".join(f"{n}:{st}" for n, st in sorted(r["services"].items())),
                  "promises": " ".join(f"{p['name']}:{'ok' if p['ok'] else 'FAIL'}"
                                       for p in r["promises"])} for r in rows],
                [("PARTITION", "reference"), ("USER", "user"), ("IPV4", "ipv4"),
                 ("IPV6", "ipv6"), ("FORMATTED", "formatted"), ("STATE", "state"),
                 ("INSTANCE", "instance"), ("STATUS", "status"), ("CPU_S", "cpu_seconds"),
                 ("MEM_MB", "memory_mb"), ("SERVICES", "services"), ("PROMISES", "promises")])


def _add_runtime(config, rows):
    """Each partition's services (asked of its supervisord now) and the promise results
    the agent last saw (promises run inside partitions, never here as root)."""
    from ..agent import LocalState, status_of
    from ..deploy import supervisor
    from ..deploy.partition import parts_of

    from .. import usage
    from ..deploy import cgroups
    from ..deploy.isolation import isolation_for

    parts = parts_of(config)
    local = LocalState(config.state_dir).get()
    by_uid = usage.processes_by_uid()
    isolation = isolation_for(config)
    lxc = isolation.name == "lxc"
    frozen = cgroups.Parent(config).frozen()
    for row in rows:
        part = parts.get(row["reference"])
        row["services"], row["promises"], row["status"] = {}, [], None
        kept = local.get(row["reference"], {})
        requested = kept.get("state")
        if part is None:
            continue
        used = usage.partition_usage(part, by_uid, isolation.container(part) if lxc else None)
        row["cpu_seconds"], row["memory_mb"] = used["cpu_seconds"], used["memory_mb"]
        if frozen:
            row["status"], row["reason"] = "frozen", "the volunteer's policy holds it"
            continue        # a frozen supervisord cannot answer
        programs = supervisor.programs(part.root, uid=part.uid)
        row["services"] = {n: st for n, (st, _) in programs.items()}
        if programs:
            row["promises"] = [{"name": p["name"], "ok": p["ok"], "message": p["message"]}
                               for _, p in sorted((kept.get("promises") or {}).items())]
        if requested:
            row["status"], row["reason"] = status_of(requested, programs, row["promises"],
                                                     bool(programs))


@group.command("software")
@config_option
@click.option("--force", is_flag=True, help="Retry failed builds now, without waiting for backoff.")
@json_option
def software(config_path, force, as_json):
    """Build every software release supplied to this node; remove destroyed ones.

    Builds run as the software user (never root), two at a time; a release a
    trusted builder put in the master's binary cache is downloaded instead.

    \b
    Example:
      slapnode node software
    """
    from .. import nodeconfig
    from ..errors import SlapnodeError
    from ..software.supply import SoftwarePass

    config = nodeconfig.load(config_path)
    client = node_client(config)
    if client is None:
        raise SlapnodeError("the node config has no master or credential; run `slapnode node register`")
    say = (lambda m: None) if as_json else (lambda m: click.echo(printable(m), err=True))
    results = SoftwarePass(config, client, say).run(client.desired_state(), force=force)
    if as_json:
        print_json([r.__dict__ for r in results])
    failed = [r for r in results if r.status == "error"]
    if failed:
        raise SlapnodeError(f"{len(failed)} release(s) failed to build; first: {failed[0].url}: "
                            f"{failed[0].how}")


@group.command("trust")
@click.argument("name")
@click.option("--revoke", is_flag=True, help="Stop trusting the node as a builder.")
@pass_context
def trust(ctx, name, revoke):
    """Trust computer NAME as a builder: its builds fill the binary cache (admins only).

    Never trust volunteer machines: other nodes run what a trusted builder uploads.

    \b
    Example:
      slapnode node trust build-1
    """
    result = ctx.client.set_trusted(name, not revoke)
    click.echo(f"{result['name']} is {'now' if result['trusted_builder'] else 'no longer'} "
               "a trusted builder")


def _node_setup(config_path):
    from .. import nodeconfig
    from ..errors import SlapnodeError

    config = nodeconfig.load(config_path)
    client = node_client(config)
    if client is None:
        raise SlapnodeError("the node config has no master or credential; run `slapnode node register`")
    return config, client


@group.command("instance")
@config_option
@json_option
def instance(config_path, as_json):
    """One full pass: deploy, start, stop and destroy what the desired state says,
    run the promises, report to the master.

    \b
    Example:
      slapnode node instance
    """
    from ..agent import InstancePass

    config, client = _node_setup(config_path)
    say = (lambda m: None) if as_json else (lambda m: click.echo(printable(m), err=True))
    outcomes = InstancePass(config, client, say).run(client.desired_state())
    if as_json:
        print_json([{"partition": o.reference, "action": o.kind, "status": o.status,
                     "reason": o.reason, "seconds": round(o.seconds, 3)} for o in outcomes])


@group.command("report")
@config_option
def report(config_path):
    """Send every partition's health (status, promises, connection) to the master.

    \b
    Example:
      slapnode node report
    """
    from ..agent import InstancePass

    config, client = _node_setup(config_path)
    outcomes = InstancePass(config, client).run(client.desired_state())
    click.echo(f"reported {sum(1 for o in outcomes if o.report)} partitions")


@group.command("run")
@config_option
@click.option("--poll-wait", type=click.FloatRange(1, 120), default=30, show_default=True,
              help="Seconds each long-poll of the master may wait.")
@click.option("--log-file", type=click.Path(dir_okay=False), metavar="PATH",
              help="Log here, rotated at 5 MB (2 kept), instead of stderr.")
def run(config_path, poll_wait, log_file):
    """The node daemon: follow the master, build, deploy, report; until stopped.

    Instances keep running when the master is away; the daemon reconnects with
    backoff. Killing it at any moment and starting it again converges. It sleeps
    until something changes and says only what changed.

    \b
    Example:
      slapnode node run --config /etc/slapnode/node.cfg
      slapnode node run --log-file /var/log/slapnode-node.log
    """

    from ..agent import Daemon

    config, client = _node_setup(config_path)
    if config.isolation == "user":
        click.echo("isolation = user: partitions are separate users without containers", err=True)
    from ..log import sayer

    say = sayer(log_file, lambda m: click.echo(m, err=True))
    from .. import nodeconfig

    daemon = Daemon(config, client, say, poll_wait=poll_wait,
                    config_path=nodeconfig.config_path(config_path))
    daemon.handle_signals()
    daemon.run()


# -- the volunteer's policy ---------------------------------------------------------------

@group.group("policy")
def policy_group():
    """The machine owner's rules for the partitions: limits, hours, idle-only."""


def _policy_rows(config):
    from .. import policy as policy_mod

    return [{"key": k, "value": v} for k, v in policy_mod.to_items(config.policy)]


@policy_group.command("show")
@config_option
@json_option
def policy_show(config_path, as_json):
    """Show the policy in the node config, and what it does now.

    \b
    Example:
      slapnode node policy show --json
    """
    from .. import nodeconfig

    config = nodeconfig.load(config_path)
    live = _live(config)
    if as_json:
        print_json({"policy": config.policy.as_dict(), "now": live})
        return
    print_table(_policy_rows(config), [("KEY", "key"), ("VALUE", "value")])
    click.echo(f"now: {live['state']}" + (f" ({live['reason']})" if live["reason"] else ""))


def _live(config):
    """What the policy does on this machine now: the kernel's freezer and limits, and the
    owner's commands."""
    from ..deploy import cgroups
    from ..volunteer import read_state

    parent = cgroups.Parent(config)
    commands = read_state(config)
    cpu, memory = parent.limits()
    state = "paused" if commands["paused"] else "frozen" if parent.frozen() else \
        "draining" if commands["draining"] else "running"
    reasons = {"paused": "paused by the owner (`slapnode node resume`)",
               "frozen": "frozen by the policy (hours or the owner's activity)",
               "draining": "draining: no new instances", "running": ""}
    return {"state": state, "reason": reasons[state], "paused": commands["paused"],
            "draining": commands["draining"], "cpu_limit_pct": cpu, "memory_limit_mb": memory,
            "partitions_cpu_seconds": round(parent.cpu_seconds(), 2),
            "partitions_memory_mb": round(parent.memory_mb(), 1)}


@policy_group.command("set")
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
@config_option
def policy_set(assignments, config_path):
    """Change the policy: the config file is rewritten and a running agent applies it
    within 2 seconds (no restart).

    Keys: cpu_limit_pct (of the whole machine, all partitions together), memory_limit_mb,
    disk_limit_gb, run_when (always | idle), idle_cpu_pct, idle_minutes, hours
    (e.g. 'mon-fri 19:00-07:00, sat-sun all'; empty: always), max_instances.

    \b
    Examples:
      slapnode node policy set cpu_limit_pct=50 memory_limit_mb=4096
      slapnode node policy set run_when=idle idle_minutes=10
      slapnode node policy set hours='mon-fri 19:00-07:00, sat-sun all'
    """
    from .. import nodeconfig
    from .. import policy as policy_mod
    from ..errors import UsageError

    config = nodeconfig.load(config_path)
    values = config.policy.as_dict()
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise UsageError(f"{assignment!r}: expected KEY=VALUE, e.g. cpu_limit_pct=50")
        values[key.strip()] = policy_mod.parse_value(key.strip(), raw)
    config.policy = policy_mod.Policy(**values)
    nodeconfig.save(config, config_path)
    click.echo("policy saved; a running agent applies it within 2 s")


def _command(config_path, **changes):
    from .. import nodeconfig
    from ..volunteer import write_state

    config = nodeconfig.load(config_path)
    return config, write_state(config, **changes)


@group.command("pause")
@config_option
def pause(config_path):
    """Freeze every partition now (nothing is killed); the master stops placing here.

    \b
    Example:
      slapnode node pause && slapnode node resume
    """
    from ..deploy import cgroups

    config, _ = _command(config_path, paused=True)
    cgroups.Parent(config).ensure()
    done = cgroups.Parent(config).freeze(True)
    click.echo("partitions paused (frozen)" + ("" if done else "; the kernel has not finished yet"))


@group.command("resume")
@config_option
def resume(config_path):
    """Undo `pause` and `drain`: partitions thaw (if the policy lets them run) and the
    master places instances here again.

    \b
    Example:
      slapnode node resume
    """
    config, _ = _command(config_path, paused=False, draining=False)
    client = node_client(config)
    if client is not None:
        try:        # (a running agent says the same within a second)
            client.report(availability={"state": "running", "reason": "",
                                        "max_instances": config.policy.max_instances})
        except Exception:
            pass
    click.echo("resumed; a running agent thaws the partitions within a second "
               "(unless the policy's hours or idle rule hold them)")


@group.command("drain")
@config_option
@json_option
def drain(config_path, as_json):
    """Take no new instances; those here keep running. Says how many remain.

    \b
    Example:
      slapnode node drain
    """
    config, _ = _command(config_path, draining=True)
    client = node_client(config)
    remaining = None
    if client is not None:
        try:
            client.report(availability={"state": "draining",
                                        "reason": "draining: the owner takes no new instances",
                                        "max_instances": config.policy.max_instances})
            doc = client.desired_state()
            remaining = sum(1 for p in doc.get("partitions", []) if p.get("instance"))
        except Exception as exc:        # the master is away: the agent tells it later
            click.echo(f"warning: the master was not told now ({exc}); the agent tells it "
                       "when it is back", err=True)
    if as_json:
        print_json({"draining": True, "remaining_instances": remaining})
        return
    click.echo("draining: no new instances come here"
               + (f"; {remaining} instance{'s' if remaining != 1 else ''} remain" if remaining
                  is not None else ""))

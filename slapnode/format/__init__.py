"""``node format``, ``node unformat`` and ``node status``: reconcile the machine
with the node config, and say where it stands.

Owns the order of things: read the machine, refuse a bad config or a name
collision before changing anything, refuse to remove a busy partition (the
master is asked first, and refuses atomically), then users and directories,
then the network, then the report to the master. Every step is idempotent,
so a format killed half way is finished by the next one.
"""

import os
from dataclasses import dataclass, field

from .. import nodeconfig
from ..errors import MasterError, SlapnodeError, UsageError
from . import network, plan, users


@dataclass
class Outcome:
    """What a format run did, for the CLI to print."""

    partitions: list = field(default_factory=list)    # PartitionSpec, all of them
    added: list = field(default_factory=list)          # references
    removed: list = field(default_factory=list)
    addresses_added: int = 0
    addresses_removed: int = 0
    taps_added: int = 0
    taps_removed: int = 0
    reported: bool = False
    report_error: str = ""

    @property
    def changed(self):
        return bool(self.added or self.removed or self.addresses_added or self.addresses_removed
                    or self.taps_added or self.taps_removed)


def _report_items(specs):
    return [{"reference": s.reference, "unix_user": s.user, "ipv4": s.ipv4, "ipv6": s.ipv6,
             "tap": s.tap} for s in specs]


def _busy_on_master(client, references):
    doc = client.desired_state()
    return {p["reference"]: p["instance"]["title"] for p in doc["partitions"]
            if p["reference"] in references and p.get("instance")}


def _cool(config, reference, user):
    """Stop a free partition's warm container (``deploy/warm.py``: a supervisord with no
    program, kept started by an agent that was not stopped cleanly). Anything else
    running there is left for the check that follows to refuse."""
    from pathlib import Path

    from ..deploy import isolation as isolation_mod
    from ..deploy import supervisor
    from ..deploy.partition import Part

    spec = plan.partition_spec(config, int(reference[len(config.partition_prefix):]))
    root = Path(spec.path)
    if not supervisor.alive(root, uid=user.uid) or supervisor.programs(root, uid=user.uid):
        return
    part = Part(reference, user.name, user.uid, user.gid, root, spec.ipv4, spec.ipv6)
    isolation_mod.isolation_for(config).stop(part, graceful=False)


def _check_removable(config, client, removing, existing, force=False):
    """Refuse (before any change) to remove a partition that holds an instance."""
    if not removing:
        return
    references = {config.partition_reference(i) for i in removing}
    if force:
        pass
    elif client is None:
        raise SlapnodeError("removing partitions needs the master, to check they are free; "
                            "set master and credential in the node config")
    else:
        try:
            busy = _busy_on_master(client, references)
        except MasterError as exc:
            raise SlapnodeError(f"cannot check with the master that {_span(sorted(references))} "
                                f"are free ({exc}); nothing was changed (--force skips this check)"
                                ) from None
    if not force and busy:
        ref, title = sorted(busy.items())[0]
        raise SlapnodeError(f"partition {ref} is busy (it holds instance {title!r}); destroy the "
                            f"instance first; nothing was changed")
    for index in removing:
        _cool(config, config.partition_reference(index), existing[index])
        running = users.user_processes(existing[index].uid)
        if running:
            raise SlapnodeError(f"partition {config.partition_reference(index)} still has processes "
                                f"running (pid {running[0]}); stop them first; nothing was changed")


def reconcile(config, client=None, remove_all=False, progress=None, force=False):
    """Make the machine match ``config`` (or remove everything with ``remove_all``)."""
    say = progress or (lambda message: None)
    target = config
    if remove_all:
        target = nodeconfig.NodeConfig(**{**config.__dict__, "partitions": 0})
    if os.geteuid() != 0:
        raise UsageError("node format needs root (it creates users and network interfaces)")

    # 1. read the machine; refuse a bad config before anything changes
    from .. import machine

    # (removing everything must work even if the machine's networks changed since)
    nodeconfig.check(target, [] if remove_all else
                     machine.other_networks(exclude={config.bridge}, netns=config.netns))
    if not remove_all:
        from . import reach

        unreachable = reach.problems(config)
        if unreachable:
            raise UsageError("; ".join(unreachable) + "; nothing was changed")
    if remove_all:      # frozen processes cannot end: thaw the partitions first
        from ..deploy import cgroups

        cgroups.Parent(config).freeze(False, wait=5.0)
    known_users = users.all_users()
    problems = plan.collisions(target, known_users, users.all_group_names())
    if problems:
        raise UsageError("; ".join(problems))
    partition_plan = plan.plan_partitions(target, known_users)
    existing = plan.our_partition_users(target, known_users)
    _check_removable(config, client, partition_plan.remove, existing, force)

    outcome = Outcome(partitions=plan.desired_partitions(target))
    # The master hears about removals first: it refuses atomically if one became busy.
    if partition_plan.remove and client is not None and not force:
        try:
            client.report_partitions(_report_items(outcome.partitions))
            outcome.reported = True
        except MasterError as exc:
            raise SlapnodeError(f"the master refused the removal: {exc}; nothing was changed") from None

    # 2. users and directories
    if not remove_all:
        users.ensure_software_user(config)
        users.ensure_dir(config.instance_root, 0, 0, 0o755)
    created = {}
    for spec in partition_plan.add:
        created[spec.index] = users.create_user(spec.user, spec.path, spec.gecos)
        outcome.added.append(spec.reference)
    for spec in partition_plan.add + partition_plan.keep:
        info = created.get(spec.index) or existing[spec.index]
        users.ensure_partition_dir(spec, info.uid, info.gid)
    if outcome.added:
        say(f"created {len(outcome.added)} partitions: {_span(outcome.added)}")

    # 3. network: interfaces and addresses, then slapnode's packet rules and resolver
    with network.open_ipr(config.netns) as ipr:
        _reconcile_network(ipr, config, target, remove_all, outcome, created, existing)
    from . import dns, firewall

    if remove_all:
        dns.stop(config, forget=True)
        firewall.remove(config)
        firewall.restore_forwarding(config)
    else:
        from ..deploy.forwards import Forwards

        firewall.apply(config, Forwards(config).all())

    for index in partition_plan.remove:
        users.remove_tree(config.partition_path(index))
        users.delete_user(existing[index].name)
        outcome.removed.append(config.partition_reference(index))
    if outcome.removed:
        say(f"removed {len(outcome.removed)} partitions: {_span(outcome.removed)}")
    if remove_all:
        _remove_software_user(config)
        try:
            os.rmdir(config.instance_root)      # only if empty: it may hold others' things
        except OSError:
            pass
        from ..deploy import cgroups
        from ..volunteer import state_path

        cgroups.Parent(config).remove()         # the partitions' parent cgroup
        state_path(config).unlink(missing_ok=True)

    # 4. tell the master (and keep its view of this machine's capacity fresh)
    if client is not None and not outcome.reported:
        try:
            client.report_partitions(_report_items(outcome.partitions))
            outcome.reported = True
            if not remove_all:
                client.report_capacity(machine.capacity(config.instance_root))
        except MasterError as exc:
            outcome.report_error = str(exc)
    return outcome


def _reconcile_network(ipr, config, target, remove_all, outcome, created, existing):
    if remove_all:
        for name in plan.plan_taps(target, network.link_names(ipr))[1]:
            network.remove_link(ipr, name)
            outcome.taps_removed += 1
        if config.ipv6_uplink:
            network.set_ndp_proxy(ipr, config.ipv6_uplink, plan.proxied_addresses(config),
                                  present=False, netns=config.netns)
        index = network.link_index(ipr, config.bridge)
        if index is None:
            return
        if config.bridge_type == "bridge":
            outcome.addresses_removed += len(network.bridge_addresses(ipr, index))
            ipr.link("del", index=index)
            return
        for iface in plan.plan_addresses(target, network.bridge_addresses(ipr, index))[1]:
            network.remove_address(ipr, index, iface)
            outcome.addresses_removed += 1
        return
    index = network.ensure_bridge(ipr, config)
    to_add, to_remove = plan.plan_addresses(target, network.bridge_addresses(ipr, index))
    for iface in to_remove:
        network.remove_address(ipr, index, iface)
    for iface in to_add:
        network.add_address(ipr, index, iface)
    outcome.addresses_added, outcome.addresses_removed = len(to_add), len(to_remove)
    taps_add, taps_remove = plan.plan_taps(target, network.link_names(ipr))
    for name in taps_remove:
        network.remove_link(ipr, name)
    infos = {**existing, **created}
    for name in taps_add:
        spec_index = int(name[len(config.tap_prefix):])
        info = infos[spec_index]
        network.add_tap(ipr, name, info.uid, info.gid, index)
    outcome.taps_added, outcome.taps_removed = len(taps_add), len(taps_remove)
    if config.ipv6_source == "global":
        # The partitions' global range is reached through the bridge (routed here by the
        # network's router, or inside the uplink's prefix: then the uplink answers
        # neighbour solicitations for each partition address).
        network.ensure_route(ipr, config.ipv6_network, index)
        if config.ipv6_uplink:
            network.set_ndp_proxy(ipr, config.ipv6_uplink, plan.proxied_addresses(config),
                                  netns=config.netns)


def _remove_software_user(config):
    for user in users.all_users():
        if user.name == config.software_user and user.gecos.startswith(plan.SOFTWARE_MARK):
            users.remove_tree(config.software_root)
            users.delete_user(user.name)


def _span(references):
    return references[0] if len(references) == 1 else f"{references[0]} .. {references[-1]}"


def status(config, client=None):
    """One dict per partition the config asks for: user, addresses, present, busy."""
    known = {u.name: u for u in users.all_users()}
    busy = {}
    master_error = "" if client is not None else "no master in the node config"
    if client is not None:
        try:
            busy = _busy_on_master(client, {config.partition_reference(i)
                                            for i in range(config.partitions)})
        except MasterError as exc:
            master_error = str(exc)
    with network.open_ipr(config.netns) as ipr:
        index = network.link_index(ipr, config.bridge)
        on_bridge = {str(a.ip) for a in network.bridge_addresses(ipr, index)} if index else set()
    rows = []
    for spec in plan.desired_partitions(config):
        user = known.get(spec.user)
        formatted = (user is not None and plan.partition_index(config, user) == spec.index
                     and os.path.isdir(spec.path))
        addresses_up = (spec.ipv4 in on_bridge and spec.ipv6 in on_bridge
                        if config.isolation == "user" else index is not None)
        rows.append({
            "reference": spec.reference, "user": spec.user,
            "uid": user.uid if user else None, "path": spec.path,
            "ipv4": spec.ipv4, "ipv6": spec.ipv6, "tap": spec.tap or None,
            "formatted": bool(formatted and addresses_up),
            "state": ("busy" if spec.reference in busy else
                      "unknown" if master_error or client is None else "free"),
            "instance": busy.get(spec.reference),
        })
    return rows, master_error

"""``node register``: enroll this machine and write its node config.

Owns the defaults that work on a plain Debian machine (partitions, prefixes,
roots, a private IPv4 range that overlaps nothing here, an IPv6 range from the
machine's global prefix or else a ULA said clearly, LXC where it is
installed), the config checks before the one-time token is spent, and the
exchange of the token for a node credential.
"""

import shutil
from pathlib import Path

from .. import machine, nodeconfig
from ..client import Client
from ..errors import UsageError


def default_isolation():
    return "lxc" if shutil.which("lxc-execute") else "user"


def build_config(base, master_url, options, netns=None):
    """The config to write: ``base`` (an existing config or defaults) plus options.
    Returns (config, notes to tell the sysadmin)."""
    notes = []
    values = dict(base.__dict__)
    values["master"] = master_url.rstrip("/")
    renames = {"ipv4_range": "ipv4_range", "ipv6_range": "ipv6_range"}
    for key, value in options.items():
        if value is not None:
            values[renames.get(key, key)] = value
    config = nodeconfig.NodeConfig(**values)
    others = machine.other_networks(exclude={config.bridge}, netns=netns or config.netns)
    if options.get("ipv4_range") is None and base.ipv4_range == nodeconfig.NodeConfig.ipv4_range:
        picked = nodeconfig.pick_ipv4_range(others)
        if picked is None:
            raise UsageError("every default private IPv4 range overlaps a network of this machine; "
                             "give one with --ipv4-range")
        config.ipv4_range = picked
    if options.get("ipv6_range") and not _is_ula(config.ipv6_range) and \
            base.ipv6_source == nodeconfig.NodeConfig.ipv6_source:
        config.ipv6_source = "global"       # a given routed range: reachable, never masqueraded
        notes.append(f"partitions get routed IPv6 addresses from {config.ipv6_range}: route it "
                     "to this machine on your router")
    if not config.ipv6_range:
        found = machine.global_ipv6(netns=netns or config.netns)
        if found and nodeconfig.global_range(found[1], found[2]):
            config.ipv6_range = nodeconfig.global_range(found[1], found[2])
            config.ipv6_source, config.ipv6_uplink = "global", found[0]
            notes.append(f"partitions get global IPv6 addresses from {config.ipv6_range} "
                         f"(inside {found[0]}'s prefix; this machine answers NDP for them)")
        else:
            config.ipv6_range = nodeconfig.ula_range(machine.machine_id(), others)
            config.ipv6_source = "ula"
            notes.append(f"no global IPv6 prefix on this machine: partitions get ULA addresses "
                         f"from {config.ipv6_range}, reachable from this machine only; give "
                         "--ipv6-range to use routed addresses")
    if options.get("isolation") is None and not base.credential:
        config.isolation = default_isolation()
    if config.isolation == "user":
        notes.append("isolation = user: partitions are separate Unix users without LXC "
                     "containers (install Debian's lxc for full isolation)")
    nodeconfig.check(config, others)
    from ..format import plan, reach, users

    found = reach.problems(config)
    found += plan.collisions(config, users.all_users(), users.all_group_names())
    if found:
        raise UsageError("; ".join(found) + "; the enrollment token was not used")
    return config, notes


def _is_ula(text):
    import ipaddress

    try:
        return ipaddress.ip_network(text, strict=False).subnet_of(ipaddress.ip_network("fc00::/7"))
    except (ValueError, TypeError):
        return True             # not a network: nodeconfig.check says so


def register(master_url, token, name, config_path, options, ca_fingerprint=None):
    path = nodeconfig.config_path(config_path)
    base = nodeconfig.load(path) if path.exists() else \
        nodeconfig.NodeConfig(state_dir=nodeconfig.default_state_dir(path))
    config, notes = build_config(base, master_url, options)
    if ca_fingerprint:          # checked and pinned before the token is spent
        from ..pinning import take_ca

        config.ca_file = str(take_ca(config.master, ca_fingerprint,
                                     Path(config.state_dir) / "master-ca.pem"))
    elif config.master.startswith("http://"):
        notes.append("warning: the master is plain HTTP: the node credential crosses the "
                     "network readable; use its https:// URL and --ca-fingerprint")
    capacity = machine.capacity(config.instance_root)
    answer = Client(config.master, ca_file=config.ca_file or None).enroll(
        token, name=name, capacity=capacity)
    config.name = answer["computer"]
    config.credential = answer["credential"]
    try:
        nodeconfig.save(config, path)
    except PermissionError:
        raise UsageError(f"cannot write {path}: run as root, or pass --config PATH") from None
    return config, path, notes

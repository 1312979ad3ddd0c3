"""What ``node format`` should change: pure decisions, no effects.

Owns the list of partitions a config asks for (reference, user, directory,
addresses, tap), how our own users are recognised (their GECOS marker), the
collisions that make a config unusable, and the difference between what the
machine has and what it should have (partitions and addresses to add and to
remove). Effects live in ``users.py`` and ``network.py``.
"""

import ipaddress
import re
from dataclasses import dataclass, field

from .. import nodeconfig

PARTITION_MARK = "slapnode partition"
SOFTWARE_MARK = "slapnode software"


@dataclass(frozen=True)
class PartitionSpec:
    index: int
    reference: str
    user: str
    path: str
    ipv4: str
    ipv6: str
    tap: str = ""

    @property
    def gecos(self):
        return f"{PARTITION_MARK} {self.reference}"


def partition_spec(config, index):
    addresses = nodeconfig.partition_addresses(config, index)
    return PartitionSpec(index, config.partition_reference(index), config.partition_user(index),
                         str(config.partition_path(index)), addresses.ipv4, addresses.ipv6,
                         config.tap_name(index) if config.tap else "")


_SPECS = {}


def desired_partitions(config):
    """Every partition the config asks for. Made once for the same settings (the key is
    exactly what ``partition_spec`` reads): a format asks several times, and each time
    cost a node of a hundred partitions some ten milliseconds."""
    key = (config.partitions, config.partition_prefix, config.user_prefix,
           str(config.instance_root), config.ipv4_range, config.ipv6_range, config.tap,
           config.tap_prefix)
    specs = _SPECS.get(key)
    if specs is None:
        if len(_SPECS) >= 8:
            _SPECS.clear()
        specs = _SPECS[key] = tuple(partition_spec(config, i) for i in range(config.partitions))
    return list(specs)


@dataclass(frozen=True)
class UserInfo:
    """What the user database says about a name (a subset of pwd.struct_passwd)."""

    name: str
    uid: int
    gid: int
    gecos: str
    home: str


def partition_index(config, user):
    """The partition index of one of our users, or None if ``user`` is not ours."""
    match = re.fullmatch(re.escape(config.user_prefix) + r"(\d+)", user.name)
    if not match or not user.gecos.startswith(PARTITION_MARK + " "):
        return None
    return int(match.group(1))


def our_partition_users(config, users):
    """{index: UserInfo} of the partition users this config made."""
    result = {}
    for user in users:
        index = partition_index(config, user)
        if index is not None:
            result[index] = user
    return result


def collisions(config, users, group_names):
    """Names the config would take that belong to someone else. One line each."""
    problems = []
    by_name = {u.name: u for u in users}
    ours = our_partition_users(config, users)
    for spec in desired_partitions(config):
        other = by_name.get(spec.user)
        if other is not None and spec.index not in ours:
            problems.append(f"user {spec.user!r} already exists and is not a slapnode partition "
                            f"user; choose another --user-prefix")
        elif other is None and spec.user in group_names:
            problems.append(f"group {spec.user!r} already exists; choose another --user-prefix")
        if len(problems) >= 3:
            break
    soft = by_name.get(config.software_user)
    if soft is not None and not soft.gecos.startswith(SOFTWARE_MARK):
        problems.append(f"user {config.software_user!r} already exists and was not made by "
                        "slapnode; set software_user to another name")
    elif soft is None and config.software_user in group_names:
        problems.append(f"group {config.software_user!r} already exists; set software_user "
                        "to another name")
    return problems


@dataclass
class PartitionPlan:
    add: list = field(default_factory=list)       # PartitionSpec to create
    keep: list = field(default_factory=list)      # PartitionSpec already there (dirs re-checked)
    remove: list = field(default_factory=list)    # indexes of our partitions beyond the count


def plan_partitions(config, users):
    ours = our_partition_users(config, users)
    result = PartitionPlan()
    for spec in desired_partitions(config):
        (result.keep if spec.index in ours else result.add).append(spec)
    result.remove = sorted(i for i in ours if i >= config.partitions)
    return result


def desired_bridge_addresses(config):
    """ip_interface objects the bridge should carry.

    The gateways always; with ``isolation = user`` also every partition's two
    addresses (processes bind them on the host). With LXC the partition
    addresses live inside each partition's network namespace instead.
    """
    v4 = config.ipv4_network
    v6 = config.ipv6_network
    wanted = {ipaddress.ip_interface(f"{nodeconfig.gateway_v4(config)}/{v4.prefixlen}")}
    if config.ipv6_source != "global":
        wanted.add(ipaddress.ip_interface(f"{nodeconfig.gateway_v6(config)}/{v6.prefixlen}"))
    if config.isolation == "user":
        for spec in desired_partitions(config):
            wanted.add(ipaddress.ip_interface(f"{spec.ipv4}/32"))
            wanted.add(ipaddress.ip_interface(f"{spec.ipv6}/128"))
    return wanted


def plan_addresses(config, actual):
    """(to_add, to_remove) for the bridge. Only addresses inside our ranges are
    ever removed: an address someone else put on the bridge stays."""
    wanted = desired_bridge_addresses(config)
    actual = set(actual)
    ours = (config.ipv4_network, config.ipv6_network)
    to_add = sorted(wanted - actual, key=str)
    to_remove = sorted((a for a in actual - wanted
                        if a.version in (4, 6) and any(a.ip in net for net in ours
                                                       if net.version == a.version)),
                       key=str)
    return to_add, to_remove


def plan_taps(config, existing_names):
    """(to_add, to_remove) tap names. Only names of our pattern are removed."""
    wanted = {config.tap_name(i) for i in range(config.partitions)} if config.tap else set()
    pattern = re.compile(re.escape(config.tap_prefix) + r"\d+")
    existing = {n for n in existing_names if pattern.fullmatch(n)}
    return sorted(wanted - existing), sorted(existing - wanted)


def proxied_addresses(config):
    """With a global prefix, the partition IPv6 addresses the uplink answers NDP for."""
    if config.ipv6_source != "global" or not config.ipv6_uplink:
        return []
    return [spec.ipv6 for spec in desired_partitions(config)]

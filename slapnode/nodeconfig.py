"""The node's configuration file (``/etc/slapnode/node.cfg``): defaults, reading,
writing, and the checks that refuse a bad config before anything changes.

Owns every tunable of a node in one place (like piku). The file is INI::

    [node]
    master = http://master.example:8480
    credential = snn_...            # secret: the file is root 0600
    name = volunteer-1
    partitions = 4
    ...
    [network]
    bridge = slapbr0
    ...

Checks here are pure (they take what they need to know about the machine as
arguments), so that they are unit-tested without root.
"""

import configparser
import functools
import ipaddress
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from . import policy as policy_mod
from .errors import UsageError

DEFAULT_PATH = "/etc/slapnode/node.cfg"
ISOLATIONS = ("lxc", "user")
BRIDGE_TYPES = ("bridge", "existing")
IPV6_SOURCES = ("ula", "global")
MAX_PARTITIONS = 4000

NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,20}$")        # user and partition prefixes
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


DEFAULT_STATE_DIR = "/var/lib/slapnode"


def config_path(path=None):
    return Path(path or os.environ.get("SLAPNODE_CONFIG") or DEFAULT_PATH)


def default_state_dir(path):
    """Each node's local state is its own: /var/lib/slapnode for the default config,
    else beside the config (``/etc/slapnode/other.cfg`` -> ``/etc/slapnode/other.state``),
    so that two nodes on one machine never share it."""
    path = Path(path).absolute()
    if path == Path(DEFAULT_PATH):
        return DEFAULT_STATE_DIR
    return str(path.with_name(path.stem + ".state"))


@dataclass
class NodeConfig:
    # [node]
    master: str = ""
    credential: str = ""
    name: str = ""
    partitions: int = 4
    user_prefix: str = "slapuser"
    partition_prefix: str = "slappart"
    software_user: str = "slapsoft"
    instance_root: str = "/srv/slapnode"
    software_root: str = "/opt/slapnode/software"
    state_dir: str = ""              # "" until loaded: see default_state_dir
    isolation: str = "lxc"
    warm_partitions: int = 2         # free partitions kept started, ready to deploy into (0: none)
    ca_file: str = ""                # the master's CA, pinned at registration ("": system's store)
    # [network]
    bridge: str = "slapbr0"
    bridge_type: str = "bridge"
    ipv4_range: str = "10.221.0.0/16"
    ipv6_range: str = ""
    ipv6_source: str = "ula"
    ipv6_uplink: str = ""           # with a global prefix: the interface that has it (NDP proxy)
    tap: bool = False
    tap_prefix: str = "slaptap"
    netns: str = ""                 # run the network part inside this network namespace (tests)
    outbound: str = "internet"      # internet | none | CIDR [PORT[-PORT]], ... (see parse_outbound)
    forward_ports: str = "20000-29999"  # node ports partitions' services may be published on
    public_ipv4: str = ""           # the node's address for forwarded ports ("": its uplink's)
    dns: bool = True                # a resolver on the bridge: instance names, then upstream
    dns_upstream: str = ""          # "": the machine's own resolvers (/etc/resolv.conf)
    # [limits] per partition (cgroups, with isolation = lxc)
    memory_limit_mb: int = 1024
    cpu_limit_pct: int = 100        # of one CPU
    pids_limit: int = 512
    # [mail] the relay partitions send mail through (slapnode/mail/; needs isolation = lxc)
    mail: bool = True
    mail_port: int = 25             # on the bridge's gateway addresses
    mail_per_hour: int = 100        # messages each partition may send in an hour
    # [policy] the volunteer's rules over all partitions together (slapnode/policy.py)
    policy: policy_mod.Policy = field(default_factory=policy_mod.Policy)

    SECTIONS = {"network": ("bridge", "bridge_type", "ipv4_range", "ipv6_range", "ipv6_source",
                            "ipv6_uplink", "tap", "tap_prefix", "netns", "outbound",
                            "forward_ports", "public_ipv4", "dns", "dns_upstream"),
                "limits": ("memory_limit_mb", "cpu_limit_pct", "pids_limit"),
                "mail": ("mail", "mail_port", "mail_per_hour")}

    @classmethod
    def section_of(cls, name):
        for section, names in cls.SECTIONS.items():
            if name in names:
                return section
        return "node"

    # -- derived values ---------------------------------------------------------------
    @property
    def ipv4_network(self):
        return _network(self.ipv4_range)

    @property
    def ipv6_network(self):
        return _network(self.ipv6_range)

    def partition_reference(self, index):
        return f"{self.partition_prefix}{index}"

    def partition_user(self, index):
        return f"{self.user_prefix}{index}"

    def partition_path(self, index):
        return Path(self.instance_root) / self.partition_reference(index)

    def tap_name(self, index):
        return f"{self.tap_prefix}{index}"


@functools.lru_cache(maxsize=64)
def _network(text):
    """A range parsed once (the networks are immutable; a node asks for them per partition)."""
    return ipaddress.ip_network(text, strict=False)


def _convert(name, kind, raw, source):
    try:
        if kind is bool or kind == "bool":
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                raise ValueError
            return lowered in ("true", "yes", "1", "on")
        if kind is int or kind == "int":
            return int(raw)
        return raw.strip()
    except ValueError:
        raise UsageError(f"{source}: {name} = {raw!r} is not a valid "
                         f"{'true/false' if kind in (bool, 'bool') else 'number'}") from None


def load(path=None):
    path = config_path(path)
    if not path.exists():
        raise UsageError(f"no node config at {path}; enroll first with "
                         "`slapnode node register --master URL --token TOKEN` (or pass --config)")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise UsageError(f"{path}: not a valid node config ({first})") from None
    known = {f.name: f for f in fields(NodeConfig) if f.name != "policy"}
    values = {}
    for section in parser.sections():
        if section == "policy":
            values["policy"] = policy_mod.from_items(parser.items(section), f"{path} [policy]")
            continue
        for name, raw in parser.items(section):
            if name not in known or NodeConfig.section_of(name) != section:
                raise UsageError(f"{path}: unknown option {name!r} in [{section}]")
            values[name] = _convert(name, known[name].type, raw, path)
    config = NodeConfig(**values)
    if not config.state_dir:
        config.state_dir = default_state_dir(path)
    return config


def save(config, path=None):
    path = config_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not config.state_dir:
        config.state_dir = default_state_dir(path)
    parser = configparser.ConfigParser(interpolation=None)
    for section in ("node", "network", "limits", "mail", "policy"):
        parser.add_section(section)
    for key, value in policy_mod.to_items(config.policy):
        parser.set("policy", key, value)
    for item in fields(NodeConfig):
        if item.name == "policy":
            continue
        value = getattr(config, item.name)
        if isinstance(value, bool):
            value = "true" if value else "false"
        parser.set(NodeConfig.section_of(item.name), item.name, str(value))
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write("# slapnode node configuration; holds the node credential (keep it 0600)\n")
        parser.write(stream)
    os.replace(tmp, path)
    return path


def relays_mail(config):
    """Whether this node runs the partitions' mail relay: [mail] mail = true, and LXC (a
    partition is known by its own address only in its own network namespace)."""
    return config.mail and config.isolation == "lxc" and not config.netns


def check(config, other_networks=()):
    """Refuse a config that cannot work. ``other_networks``: the networks of the
    addresses already on the machine outside our bridge. Raises UsageError."""
    problems = []
    if not NAME_RE.match(config.user_prefix):
        problems.append(f"user_prefix {config.user_prefix!r} must be lowercase letters, digits, "
                        "'_' or '-', at most 21 characters")
    if not NAME_RE.match(config.partition_prefix):
        problems.append(f"partition_prefix {config.partition_prefix!r} is not a valid name")
    if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", config.software_user):
        problems.append(f"software_user {config.software_user!r} is not a valid user name")
    if config.software_user.startswith(config.user_prefix) and \
            config.software_user[len(config.user_prefix):].isdigit():
        problems.append(f"software_user {config.software_user!r} looks like a partition user")
    if not 0 <= config.partitions <= MAX_PARTITIONS:
        problems.append(f"partitions = {config.partitions}: must be between 0 and {MAX_PARTITIONS}")
    if config.isolation not in ISOLATIONS:
        problems.append(f"isolation {config.isolation!r} must be one of {', '.join(ISOLATIONS)}")
    if config.bridge_type not in BRIDGE_TYPES:
        problems.append(f"bridge_type {config.bridge_type!r} is unknown; use one of "
                        f"{', '.join(BRIDGE_TYPES)}")
    if not IFNAME_RE.match(config.bridge):
        problems.append(f"bridge {config.bridge!r} must be 1-15 letters, digits, '_', '.' or '-'")
    if config.tap and not IFNAME_RE.match(config.tap_name(max(config.partitions - 1, 0))):
        problems.append(f"tap_prefix {config.tap_prefix!r} makes interface names over 15 characters")
    for root in ("instance_root", "software_root", "state_dir"):
        if not os.path.isabs(getattr(config, root)):
            problems.append(f"{root} {getattr(config, root)!r} must be an absolute path")
    if os.path.abspath(config.instance_root) == os.path.abspath(config.software_root):
        problems.append("instance_root and software_root must differ")
    for limit in ("memory_limit_mb", "cpu_limit_pct", "pids_limit", "mail_per_hour"):
        if getattr(config, limit) <= 0:
            problems.append(f"{limit} must be a positive number")
    if config.warm_partitions < 0:
        problems.append(f"warm_partitions = {config.warm_partitions}: must be 0 (none) or more")
    if not 0 < config.mail_port < 65536:
        problems.append(f"mail_port = {config.mail_port}: must be a TCP port (25)")
    if config.ipv6_source not in IPV6_SOURCES:
        problems.append(f"ipv6_source {config.ipv6_source!r} must be ula or global")
    for parse, name in ((parse_outbound, "outbound"), (parse_port_range, "forward_ports")):
        try:
            parse(getattr(config, name))
        except ValueError as exc:
            problems.append(str(exc))
    if config.public_ipv4:
        try:
            if ipaddress.ip_address(config.public_ipv4).version != 4:
                raise ValueError
        except ValueError:
            problems.append(f"public_ipv4 {config.public_ipv4!r} is not an IPv4 address")
    for server in filter(None, (s.strip() for s in config.dns_upstream.split(","))):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            problems.append(f"dns_upstream {server!r} is not an IP address")
    problems += _check_ranges(config, other_networks)
    if problems:
        raise UsageError("bad node config: " + "; ".join(problems))


def _check_ranges(config, other_networks):
    problems = []
    try:
        v4 = ipaddress.ip_network(config.ipv4_range, strict=False)
        if v4.version != 4:
            raise ValueError
    except ValueError:
        return [f"ipv4_range {config.ipv4_range!r} is not an IPv4 network (e.g. 10.221.0.0/16)"]
    try:
        v6 = ipaddress.ip_network(config.ipv6_range, strict=False)
        if v6.version != 6:
            raise ValueError
    except ValueError:
        return [f"ipv6_range {config.ipv6_range!r} is not an IPv6 network (e.g. fd12:3456:789a::/64)"]
    # network address, gateway (.1), one per partition, broadcast
    if v4.num_addresses < config.partitions + 3:
        problems.append(f"ipv4_range {v4} holds {max(v4.num_addresses - 3, 0)} partition addresses, "
                        f"fewer than the {config.partitions} partitions; use a larger range")
    if v6.num_addresses < config.partitions + 2:
        problems.append(f"ipv6_range {v6} is too small for {config.partitions} partitions")
    if not v4.is_private:
        problems.append(f"ipv4_range {v4} is not a private range (10/8, 172.16/12, 192.168/16)")
    for other in other_networks:
        if other.version == 4 and other.prefixlen > 0 and v4.overlaps(other):
            problems.append(f"ipv4_range {v4} overlaps {other}, already on this machine; pick another")
        if other.version == 6 and other.prefixlen > 0 and v6.overlaps(other) and \
                config.ipv6_source != "global":
            problems.append(f"ipv6_range {v6} overlaps {other}, already on this machine; pick another")
    return problems


def parse_outbound(text):
    """``internet``, ``none``, or an allow list: ``CIDR [PORT|PORT-PORT]`` entries separated
    by commas (TCP and UDP). Returns "internet", "none" or [(network, ports or None)].
    Raises ValueError with one line."""
    text = (text or "").strip()
    if text in ("internet", "none"):
        return text
    rules = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        words = entry.split()
        try:
            network = ipaddress.ip_network(words[0], strict=False)
        except ValueError:
            raise ValueError(f"outbound {entry!r}: {words[0]!r} is not a network; write "
                             "internet, none, or e.g. 192.0.2.0/24 443, 2001:db8::/32") from None
        ports = parse_port_range(words[1], "outbound") if len(words) == 2 else None
        if len(words) > 2:
            raise ValueError(f"outbound {entry!r}: expected CIDR [PORT or PORT-PORT]")
        rules.append((network, ports))
    if not rules:
        raise ValueError("outbound is empty; write internet, none, or an allow list")
    return rules


def parse_port_range(text, what="forward_ports"):
    """``N`` or ``N-M`` (1-65535) -> (N, M). Raises ValueError with one line."""
    low, sep, high = str(text).strip().partition("-")
    try:
        first, last = int(low), int(high) if sep else int(low)
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected a port or a range like 20000-29999") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{what} {text!r}: ports go from 1 to 65535, low to high")
    return first, last


@dataclass
class Addresses:
    """The addresses of one partition, derived from its index: stable across runs."""

    ipv4: str
    ipv6: str


def gateway_v4(config):
    return config.ipv4_network.network_address + 1


def gateway_v6(config):
    return config.ipv6_network.network_address + 1


def partition_addresses(config, index):
    """Partition ``index`` always gets the same two addresses (after the gateway)."""
    return Addresses(str(config.ipv4_network.network_address + 2 + index),
                     str(config.ipv6_network.network_address + 2 + index))


def ula_range(machine_id, other_networks=()):
    """A ULA /64 derived from the machine id: stable for this machine, unlikely
    elsewhere; the next subnet when a node on this machine already took it."""
    import hashlib

    digest = hashlib.sha256(("slapnode:" + machine_id).encode()).digest()
    for subnet in range(0x5A00, 0x5B00):
        prefix = bytes([0xFD]) + digest[:5] + subnet.to_bytes(2, "big") + bytes(8)
        network = ipaddress.IPv6Network((prefix, 64))
        if not any(o.version == 6 and network.overlaps(o) for o in other_networks):
            return str(network)
    raise UsageError("no free ULA subnet for this machine; give --ipv6-range")


def global_range(address, prefixlen):
    """Partition addresses inside the machine's own global prefix: a /80 of it."""
    network = ipaddress.ip_network(f"{address}/{prefixlen}", strict=False)
    if network.prefixlen > 64:
        return None
    base = int(network.network_address) | (0x5A5A << 48)
    return str(ipaddress.IPv6Network((base, 80)))


def is_global_v6(address):
    addr = ipaddress.ip_address(address)
    return addr.version == 6 and addr in ipaddress.ip_network("2000::/3") and not addr.is_private


PRIVATE_V4_CANDIDATES = ("10.221.0.0/16", "10.222.0.0/16", "172.29.0.0/16", "192.168.221.0/24")


def pick_ipv4_range(other_networks):
    for candidate in PRIVATE_V4_CANDIDATES:
        network = ipaddress.ip_network(candidate)
        if not any(o.version == 4 and o.prefixlen > 0 and network.overlaps(o) for o in other_networks):
            return candidate
    return None


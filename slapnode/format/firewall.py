"""The node's packet rules: the partitions' way out, what they may reach, forwarded ports.

Owns slapnode's own nftables tables, ``inet slapnode_<bridge>`` and ``bridge
slapnode_<bridge>`` (never anyone else's: the volunteer's own rules are not
touched), rendered from the node config and the forwarded ports (pure:
``ruleset``) and applied in one atomic ``nft -f`` transaction (Debian's
nftables), so that re-applying is idempotent; ``remove`` deletes them. Also
owns the kernel's forwarding switches: turned on for the partitions, their
earlier values kept and given back when the last node leaves; while slapnode is
the reason forwarding is on, forwarding between the machine's other interfaces
stays off (the shared ``inet slapnode_guard`` table).

What the rules say (docs/network.md has the picture):
* partitions reach out through the node: IPv4 masqueraded behind the node's
  address, IPv6 routed (global) or masqueraded (ULA);
* ``outbound``: ``internet`` (anything but private, link-local, ULA, loopback
  and multicast ranges), ``none``, or an allow list of networks and ports;
* partitions reach nothing of the node itself but its DNS resolver, and not
  each other's private IPv4 (unless the allow list covers the node's range); they
  reach each other's IPv6, also where br_netfilter hands bridged frames to us;
* nothing enters a partition unasked but its global IPv6 services and the
  ports forwarded to it (DNAT from the node's public IPv4).
"""

import ipaddress
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import nodeconfig
from ..errors import SlapnodeError

NFT = shutil.which("nft", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/nft"
NOT_INTERNET_V4 = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
                   "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15",
                   "224.0.0.0/4", "240.0.0.0/4")
NOT_INTERNET_V6 = ("::/127", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8")


@dataclass(frozen=True)
class Forward:
    """A TCP port of a partition published on the node's public IPv4."""

    node_port: int
    ipv4: str
    port: int


def table_name(config):
    return "slapnode_" + re.sub(r"[^A-Za-z0-9_]", "_", config.bridge)


def _set(items):
    return "{ " + ", ".join(items) + " }"


def _allow_rules(rules):
    lines = []
    for network, ports in rules:
        family = "ip" if network.version == 4 else "ip6"
        match = f"{family} daddr {network}"
        if ports is None:
            lines.append(f"{match} accept")
        else:
            span = str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"
            lines.append(f"{match} meta l4proto {{ tcp, udp }} th dport {span} accept")
    return lines


def ruleset(config, forwards=(), public_ipv4="", ports=()):
    """The nftables script that (re)defines slapnode's tables for this node. Pure.

    ``forwards``: [Forward]; ``public_ipv4``: the node address they are published on;
    ``ports``: the bridge ports of this node's partitions (their containers' veths),
    between which IPv4 is dropped unless the allow list covers the node's range."""
    table = table_name(config)
    br = f'"{config.bridge}"'
    v4 = config.ipv4_network
    v6 = config.ipv6_network
    gw4 = nodeconfig.gateway_v4(config)
    gw6 = nodeconfig.gateway_v6(config)
    policy = nodeconfig.parse_outbound(config.outbound)

    refuse = "reject with icmpx type admin-prohibited"     # fails at once, not by time-out
    out = []
    if policy == "internet":
        out += [f"ip daddr {_set(NOT_INTERNET_V4)} {refuse}",
                f"ip6 daddr {_set(NOT_INTERNET_V6)} {refuse}", "accept"]
    elif policy == "none":
        out += [refuse]
    else:
        out += _allow_rules(policy) + [refuse]
    peers_allowed = policy != "none" and policy != "internet" and \
        any(net.version == 4 and net.overlaps(v4) and ports is None for net, ports in policy)

    to_node = ["ct state established,related accept"]
    if config.dns:
        to_node += [f"ip daddr {gw4} meta l4proto {{ tcp, udp }} th dport 53 accept",
                    f"ip6 daddr {gw6} meta l4proto {{ tcp, udp }} th dport 53 accept"]
    mail = []
    if nodeconfig.relays_mail(config):      # the partitions' mail relay (slapnode/mail/)
        to_node += [f"ip daddr {gw4} tcp dport {config.mail_port} accept",
                    f"ip6 daddr {gw6} tcp dport {config.mail_port} accept"]
        # and from nowhere else: no other host relays through it
        mail = [f"ip daddr {gw4} tcp dport {config.mail_port} {refuse}",
                f"ip6 daddr {gw6} tcp dport {config.mail_port} {refuse}"]
    to_node += ["icmp type echo-request accept",
                "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, "
                "echo-request, echo-reply } accept",
                "reject with icmpx type admin-prohibited"]

    into = ["ct state established,related accept", "ct status dnat accept",
            "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, echo-request } accept"]
    if config.ipv6_source == "global":
        into.append(f"ip6 daddr {v6} accept")          # services published on global IPv6
    into.append("drop")

    # Partitions reach each other's IPv6 (their public face) on the bridge. Bridged
    # frames come here only where br_netfilter is loaded (Docker, some LXC set-ups),
    # and would otherwise meet the outbound policy and the inbound drop.
    forward = [f"iifname {br} oifname {br} meta nfproto ipv6 accept",
               f"iifname {br} jump from_partitions", f"oifname {br} jump into_partitions"]

    dnat = [f"ip daddr {public_ipv4} tcp dport {f.node_port} dnat ip to {f.ipv4}:{f.port}"
            for f in sorted(forwards, key=lambda f: f.node_port)] if public_ipv4 else []
    masquerade = [f"ip saddr {v4} oifname != {br} masquerade"]
    if config.ipv6_source != "global":
        masquerade.append(f"ip6 saddr {v6} oifname != {br} masquerade")

    def chain(name, hook, lines, kind="filter", priority="filter"):
        head = f"    type {kind} hook {hook} priority {priority}; policy accept;\n" if hook else ""
        body = "".join(f"    {line}\n" for line in lines)
        return f"  chain {name} {{\n{head}{body}  }}\n"

    inet = (chain("forward", "forward", forward)
            + chain("from_partitions", None, ["ct state established,related accept"] + out)
            + chain("into_partitions", None, into)
            + chain("input", "input", [f"iifname {br} jump to_node"]
                    + [f"iifname != {br} {line}" for line in mail])
            + chain("to_node", None, to_node)
            + chain("prerouting", "prerouting", dnat, "nat", "dstnat")
            + chain("output", "output", dnat, "nat", "-100")
            + chain("postrouting", "postrouting", masquerade, "nat", "srcnat"))
    names = _set(f'"{p}"' for p in sorted(ports))
    bridge = chain("forward", "forward", [] if peers_allowed or not ports else
                   [f"iifname {names} oifname {names} ether type ip drop"])
    return (f"table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n{inet}}}\n"
            f"table bridge {table}\ndelete table bridge {table}\n"
            f"table bridge {table} {{\n{bridge}}}\n")


# -- effects ---------------------------------------------------------------------------------

def _in_netns(config, argv):
    return (["ip", "netns", "exec", config.netns, *argv] if config.netns else argv)


def nft(config, script):
    result = subprocess.run(_in_netns(config, [NFT, "-f", "-"]), input=script, text=True,
                            capture_output=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise SlapnodeError(f"nftables refused slapnode's rules: {lines[0] if lines else '?'}")


def remove(config):
    """Delete slapnode's tables (absent ones are fine)."""
    table = table_name(config)
    nft(config, f"table inet {table}\ndelete table inet {table}\n"
                f"table bridge {table}\ndelete table bridge {table}\n")


def tables(config, every_node=False):
    """slapnode's tables present now, as "family name": this node's (or, with
    ``every_node``, every slapnode table, the shared guard included)."""
    result = subprocess.run(_in_netns(config, [NFT, "list", "tables"]), capture_output=True,
                            text=True)
    table = table_name(config)
    return [" ".join(line.split()[1:]) for line in result.stdout.splitlines()
            if line.split()[-1:] == [table]
            or (every_node and line.split()[-1].startswith("slapnode_"))]


# -- forwarding switches, kept and given back -------------------------------------------
#
# Forwarding is one switch per network namespace (IPv6 has no per-interface one on
# Debian 12's kernel), shared by every slapnode node there. The first node to need it
# records what was there in /run (sysctls do not survive a reboot, nor does /run), and
# the shared table ``inet slapnode_guard`` lists every node's bridge: when slapnode is
# why forwarding is on, it drops forwarding between the machine's other interfaces.
# The last node to leave restores the switches and deletes the guard.

GUARD = "slapnode_guard"


def _sysctl_path(key):
    return "/proc/sys/" + key.replace(".", "/")


def read_sysctl(config, key):
    if config.netns:
        result = subprocess.run(_in_netns(config, ["cat", _sysctl_path(key)]), capture_output=True,
                                text=True)
        return result.stdout.strip()
    try:
        return Path(_sysctl_path(key)).read_text().strip()
    except OSError:
        return ""


def write_sysctl(config, key, value):
    if config.netns:
        subprocess.run(_in_netns(config, ["sh", "-c", f"echo {value} > {_sysctl_path(key)}"]),
                       check=True, capture_output=True)
    else:
        Path(_sysctl_path(key)).write_text(f"{value}\n")


def _saved_path(config):
    """Where the switches' earlier values are kept: one file per network namespace
    (named by its inode: two nodes in two namespaces keep theirs apart)."""
    target = f"/run/netns/{config.netns}" if config.netns else "/proc/self/ns/net"
    return Path("/run/slapnode") / f"forwarding-{os.stat(target).st_ino}.json"


def _load_saved(config):
    try:
        return json.loads(_saved_path(config).read_text())
    except (OSError, ValueError):
        return {}


def guard_script(bridge, guard_v4, guard_v6):
    """Add ``bridge`` to the guard, and the guard's rules. Pure."""
    rules = "".join(f"add rule inet {GUARD} forward meta nfproto {family} "
                    f"iifname != @bridges oifname != @bridges drop\n"
                    for family, on in (("ipv4", guard_v4), ("ipv6", guard_v6)) if on)
    return (f"add table inet {GUARD}\n"
            f"add set inet {GUARD} bridges {{ type ifname; }}\n"
            f"add chain inet {GUARD} forward {{ type filter hook forward priority filter; "
            "policy accept; }\n"
            f"flush chain inet {GUARD} forward\n{rules}"
            f'add element inet {GUARD} bridges {{ "{bridge}" }}\n')


def enable_forwarding(config, rules=""):
    """Turn IPv4 and IPv6 forwarding on; record what was there first (interfaces that
    took router advertisements keep taking them: accept_ra = 2); put this node's
    bridge in the guard. ``rules``: more nft script, applied in the guard's transaction
    (one nft process), before the switches are turned on."""
    saved = _load_saved(config)
    if not saved:
        saved = {"net.ipv4.ip_forward": read_sysctl(config, "net.ipv4.ip_forward"),
                 "net.ipv6.conf.all.forwarding": read_sysctl(config, "net.ipv6.conf.all.forwarding")}
        if saved["net.ipv6.conf.all.forwarding"] == "0":
            for name in _interfaces(config):
                key = f"net.ipv6.conf.{name}.accept_ra"
                if name != "lo" and read_sysctl(config, key) == "1":
                    saved[key] = "1"
        path = _saved_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(saved, sort_keys=True))
        os.replace(tmp, path)
    for key in saved:
        if key.endswith(".accept_ra"):
            try:
                write_sysctl(config, key, 2)
            except (OSError, subprocess.CalledProcessError):
                pass                        # the interface went away since
    nft(config, guard_script(config.bridge, saved.get("net.ipv4.ip_forward") == "0",
                             saved.get("net.ipv6.conf.all.forwarding") == "0") + rules)
    write_sysctl(config, "net.ipv4.ip_forward", 1)
    write_sysctl(config, "net.ipv6.conf.all.forwarding", 1)


def guarded_bridges(config):
    result = subprocess.run(_in_netns(config, [NFT, "-j", "list", "set", "inet", GUARD,
                                               "bridges"]), capture_output=True, text=True)
    if result.returncode != 0:
        return []
    try:
        for item in json.loads(result.stdout).get("nftables", []):
            if "set" in item:
                return [e if isinstance(e, str) else str(e) for e in item["set"].get("elem", [])]
    except (ValueError, AttributeError):
        pass
    return []


def restore_forwarding(config):
    """Take this node's bridge out of the guard; the last node gives the switches back
    (where they still hold slapnode's value) and deletes the guard."""
    if config.bridge in guarded_bridges(config):
        nft(config, f'delete element inet {GUARD} bridges {{ "{config.bridge}" }}\n')
    if guarded_bridges(config):
        return                              # another node here still needs forwarding
    nft(config, f"add table inet {GUARD}\ndelete table inet {GUARD}\n")
    saved = _load_saved(config)
    for key, value in saved.items():
        ours = "2" if key.endswith(".accept_ra") else "1"
        if read_sysctl(config, key) == ours and value != ours:
            try:
                write_sysctl(config, key, value)
            except (OSError, subprocess.CalledProcessError):
                pass
    _saved_path(config).unlink(missing_ok=True)


def _interfaces(config):
    result = subprocess.run(_in_netns(config, ["ls", "/proc/sys/net/ipv6/conf"]),
                            capture_output=True, text=True)
    return [n for n in result.stdout.split() if n not in ("all", "default")]


def public_ipv4(config):
    """The address forwarded ports are published on: the config's, else the primary
    IPv4 of the interface that holds the default route ("" if there is none)."""
    if config.public_ipv4:
        return config.public_ipv4
    from . import network

    with network.open_ipr(config.netns) as ipr:
        for route in ipr.get_default_routes(family=2):
            index = route.get_attr("RTA_OIF")
            for address in ipr.get_addr(family=2, index=index):
                value = address.get_attr("IFA_ADDRESS")
                if value and not ipaddress.ip_address(value).is_loopback:
                    return value
    return ""


def partition_ports(config):
    """The bridge ports of this node's partitions: ``sv<uid>``, their containers' veths."""
    from ..deploy.isolation import veth_name
    from ..deploy.partition import parts_of

    return [veth_name(part.uid) for part in parts_of(config).values()]


def apply(config, forwards=()):
    """Forwarding on, and slapnode's tables as the config and ``forwards`` say."""
    enable_forwarding(config, ruleset(config, forwards, public_ipv4(config),
                                      partition_ports(config)))

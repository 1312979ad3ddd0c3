"""The network's pure decisions: instance names, the outbound policy, the rules a node
applies, forwarded ports, the resolver's command line and hosts file."""

import ipaddress

import pytest

from slapnode import nodeconfig
from slapnode.deploy.forwards import allocate
from slapnode.format import dns, firewall
from slapnode.master import dns as master_dns
from slapnode.master import names


@pytest.mark.parametrize("text, label", [
    ("My Hello", "my-hello"), ("Élan vital!", "elan-vital"), ("--x--", "x"),
    ("", "x"), ("日本", "x"), ("a" * 40, "a" * 24), ("ab-" + "c" * 30, "ab-" + "c" * 21),
])
def test_titles_become_valid_dns_labels(text, label):
    assert names.label(text, names.TITLE_MAX) == label


def test_an_instance_name_is_unique_and_stable_in_shape():
    wanted = names.relative_name("Web", "ada@lab")
    assert wanted == "web.ada-lab"
    assert names.unique_name(wanted, set()) == wanted
    assert names.unique_name(wanted, {wanted}) == "web-2.ada-lab"
    assert names.unique_name(wanted, {wanted, "web-2.ada-lab"}) == "web-3.ada-lab"
    long = names.relative_name("a" * 40, "ada")
    assert names.unique_name(long, {long}).split(".")[0] == "a" * 22 + "-2"
    assert names.fqdn("web.ada-lab", "grid.test") == "web.ada-lab.grid.test"


@pytest.mark.parametrize("zone, ok", [("slapnode.internal", True), ("Grid.Example.org.", True),
                                      ("bad_zone", False), ("-x.org", False), ("", False)])
def test_zones_are_checked(zone, ok):
    if ok:
        assert names.check_zone(zone) == zone.lower().rstrip(".")
    else:
        with pytest.raises(ValueError):
            names.check_zone(zone)


def test_the_masters_zone_file_lists_placed_instances_with_ipv6():
    text = master_dns.hosts_text([("b.ada", "fd00::3"), ("a.ada", "fd00::2"), (None, "fd00::4"),
                                  ("c.ada", "")], "grid.test")
    assert text == "fd00::2 a.ada.grid.test\nfd00::3 b.ada.grid.test\n"
    args = master_dns.dnsmasq_args("grid.test", "192.0.2.10", 53, "/h", "/p")
    assert "--local=/grid.test/" in args and "--listen-address=192.0.2.10" in args
    assert "--hostsdir=/h" in args and "--log-facility=/dev/null" in args


def config(**values):
    base = {"bridge": "snbx", "ipv4_range": "10.231.0.0/24", "ipv6_range": "fd00:1:2:3::/64",
            "state_dir": "/tmp/x"}
    return nodeconfig.NodeConfig(**{**base, **values})


def test_outbound_internet_refuses_private_ranges_and_masquerades():
    rules = firewall.ruleset(config(), ports=["sv1", "sv2"])
    assert "table inet slapnode_snbx" in rules and "delete table inet slapnode_snbx" in rules
    assert "ip saddr 10.231.0.0/24 oifname != \"snbx\" masquerade" in rules
    assert "ip6 saddr fd00:1:2:3::/64 oifname != \"snbx\" masquerade" in rules   # a ULA
    assert "10.0.0.0/8" in rules and "fc00::/7" in rules and "reject with icmpx" in rules
    assert 'iifname { "sv1", "sv2" } oifname { "sv1", "sv2" } ether type ip drop' in rules
    assert "ip daddr 10.231.0.1 meta l4proto { tcp, udp } th dport 53 accept" in rules


def test_partitions_reach_each_others_ipv6_on_the_bridge_even_through_br_netfilter():
    """Bridged frames reach the inet forward hook where br_netfilter is loaded: IPv6
    between partitions is accepted before the outbound policy and the inbound drop."""
    for outbound in ("internet", "none", "192.0.2.0/24 443"):
        forward = firewall.ruleset(config(outbound=outbound)).split("chain forward")[1].split("}")[0]
        rules = [line.strip() for line in forward.strip().splitlines()[2:]]
        assert rules[0] == 'iifname "snbx" oifname "snbx" meta nfproto ipv6 accept'
        assert rules[1] == 'iifname "snbx" jump from_partitions'


def test_outbound_none_and_allow_lists():
    closed = firewall.ruleset(config(outbound="none"))
    section = closed.split("chain from_partitions")[1].split("}")[0]
    assert "accept" in section and section.strip().splitlines()[-1].strip().startswith("reject")
    allowed = firewall.ruleset(config(outbound="192.0.2.0/24 443, 10.231.0.0/24"), ports=["sv1"])
    assert "ip daddr 192.0.2.0/24 meta l4proto { tcp, udp } th dport 443 accept" in allowed
    assert "ether type ip drop" not in allowed        # the node's own range is allowed


def test_global_ipv6_is_routed_and_reachable_and_forwarded_ports_are_dnat():
    rules = firewall.ruleset(config(ipv6_source="global", ipv6_range="2001:db8:5a5a::/80"),
                             [firewall.Forward(20001, "10.231.0.2", 8080)], "192.0.2.2")
    assert "ip6 saddr 2001:db8:5a5a::/80" not in rules          # no masquerade
    assert "ip6 daddr 2001:db8:5a5a::/80 accept" in rules       # services on global IPv6
    assert "ip daddr 192.0.2.2 tcp dport 20001 dnat ip to 10.231.0.2:8080" in rules


def test_the_forwarding_guard_lists_bridges():
    script = firewall.guard_script("snbx", True, False)
    assert 'add element inet slapnode_guard bridges { "snbx" }' in script
    assert "meta nfproto ipv4 iifname != @bridges oifname != @bridges drop" in script
    assert "nfproto ipv6" not in script


@pytest.mark.parametrize("text, error", [
    ("x", "not a network"), ("10.0.0.0/8 99999", "ports go from"), ("", "empty"),
    ("10.0.0.0/8 1 2", "expected CIDR"),
])
def test_bad_outbound_values_are_explained(text, error):
    with pytest.raises(ValueError, match=error):
        nodeconfig.parse_outbound(text)
    with pytest.raises(Exception, match=error):
        nodeconfig.check(config(outbound=text, partitions=1))


def test_forwarded_ports_are_kept_unique_and_lowest_first():
    span = (20000, 20003)
    first = allocate({}, {"web": 80, "ssh": 22}, set(), span)
    assert first == {"ssh": 20000, "web": 20001}
    kept = allocate({"web": {"node_port": 20001}}, {"web": 80, "api": 81}, {20000}, span)
    assert kept == {"web": 20001, "api": 20002}
    with pytest.raises(ValueError, match="no free port"):
        allocate({}, {"a": 1, "b": 2}, {20000, 20001, 20002}, span)
    assert allocate({"web": {"node_port": 30000}}, {"web": 80}, set(), span) == {"web": 20000}


def test_the_nodes_resolver_serves_its_names_and_forwards_the_rest():
    c = config(dns_upstream="192.0.2.53")
    args = dns.args(c, "grid.test", ["192.0.2.10#5353"], dns.upstream(c))
    assert "--server=/grid.test/192.0.2.10#5353" in args and "--server=192.0.2.53" in args
    assert "--listen-address=10.231.0.1" in args and "--listen-address=fd00:1:2:3::1" in args
    closed = dns.args(config(outbound="none"), "grid.test", [], ["192.0.2.53"])
    assert "--local=/grid.test/" in closed and not any(a == "--server=192.0.2.53" for a in closed)
    assert dns.hosts_text([("b.x", "10.0.0.3", "fd::3"), (None, "1", "2")]) == \
        "10.0.0.3 b.x\nfd::3 b.x\n"
    assert dns.resolv_conf(c, "grid.test").startswith("nameserver 10.231.0.1\n")
    assert "search grid.test" in dns.resolv_conf(c, "grid.test")
    ipaddress.ip_address(dns.resolv_conf(c, "").split()[1])


@pytest.mark.parametrize("text, ula", [("fd5a:1:2::/64", True), ("2001:db8:ff:c00::/64", False),
                                       ("2a01:e34::/64", False), ("10.0.0.0/8", True),
                                       ("nonsense", True)])
def test_a_given_ipv6_range_outside_ula_is_routed(text, ula):
    """`node register --ipv6-range` with a routed range makes the node global: its
    partitions are reachable and never masqueraded."""
    from slapnode.node.register import _is_ula

    assert _is_ula(text) is ula


def test_format_loads_only_the_part_of_pyroute2_it_uses():
    """`node format` imports pyroute2's IPRoute without the package's __init__ (all of
    pyroute2); a later import of anything else from the package still finds it."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from slapnode.format import network\n"
            "network._lean_pyroute2()\n"
            "from pyroute2.iproute import IPRoute, NetNS\n"
            "assert 'pyroute2.ndb.main' not in sys.modules, 'the whole package was loaded'\n"
            "from pyroute2 import NDB, IPRoute as again, netns\n"
            "import pyroute2\n"
            "assert again is IPRoute and pyroute2.__version__ and NDB and netns.pushns\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

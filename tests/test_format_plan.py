"""Pure parts of formatting: the node config, address allocation, plans. No root needed."""

import ipaddress
from dataclasses import replace

import pytest

from slapnode import nodeconfig
from slapnode.errors import UsageError
from slapnode.format import plan
from slapnode.format.plan import UserInfo


def config(**changes):
    base = nodeconfig.NodeConfig(name="n", partitions=4, user_prefix="tu", software_user="tsoft",
                                 instance_root="/srv/t", software_root="/opt/t",
                                 ipv4_range="10.221.0.0/24", ipv6_range="fd00:1:2:3::/64",
                                 isolation="user")
    return replace(base, **changes)


def ours(cfg, index, uid=None):
    return UserInfo(cfg.partition_user(index), uid or 900 + index, uid or 900 + index,
                    f"{plan.PARTITION_MARK} {cfg.partition_reference(index)}",
                    str(cfg.partition_path(index)))


def test_partition_addresses_are_derived_from_the_index_and_stable():
    cfg = config()
    assert nodeconfig.partition_addresses(cfg, 0).ipv4 == "10.221.0.2"
    assert nodeconfig.partition_addresses(cfg, 3).ipv6 == "fd00:1:2:3::5"
    grown = config(partitions=10)
    for i in range(4):
        assert nodeconfig.partition_addresses(cfg, i) == nodeconfig.partition_addresses(grown, i)


def test_desired_partitions_name_users_dirs_and_taps():
    specs = plan.desired_partitions(config(tap=True))
    assert [s.reference for s in specs] == ["slappart0", "slappart1", "slappart2", "slappart3"]
    assert specs[1].user == "tu1" and specs[1].path == "/srv/t/slappart1"
    assert specs[2].tap == "slaptap2"


def test_plan_adds_missing_keeps_existing_and_removes_beyond_the_count():
    cfg = config(partitions=3)
    users = [ours(cfg, 0), ours(cfg, 1), ours(cfg, 4),
             UserInfo("tu7", 1007, 1007, "someone else", "/home/tu7")]
    result = plan.plan_partitions(cfg, users)
    assert [s.index for s in result.keep] == [0, 1]
    assert [s.index for s in result.add] == [2]
    assert result.remove == [4]        # tu7 is not ours: never removed


def test_a_foreign_user_with_a_partition_name_is_a_collision():
    cfg = config()
    foreign = UserInfo("tu2", 1002, 1002, "Tu Two", "/home/tu2")
    problems = plan.collisions(cfg, [foreign], set())
    assert problems and "tu2" in problems[0] and "--user-prefix" in problems[0]


def test_a_foreign_group_or_software_user_is_a_collision():
    cfg = config()
    assert "group 'tu0'" in plan.collisions(cfg, [], {"tu0"})[0]
    soft = UserInfo("tsoft", 1, 1, "not ours", "/")
    assert "software_user" in plan.collisions(cfg, [soft], set())[0]
    mine = UserInfo("tsoft", 1, 1, plan.SOFTWARE_MARK, "/opt/t")
    assert plan.collisions(cfg, [mine, ours(cfg, 0)], set()) == []


def test_user_isolation_puts_partition_addresses_on_the_bridge():
    cfg = config(partitions=2)
    wanted = {str(a) for a in plan.desired_bridge_addresses(cfg)}
    assert wanted == {"10.221.0.1/24", "fd00:1:2:3::1/64", "10.221.0.2/32", "10.221.0.3/32",
                      "fd00:1:2:3::2/128", "fd00:1:2:3::3/128"}


def test_lxc_isolation_keeps_only_the_gateways_on_the_bridge():
    cfg = config(partitions=2, isolation="lxc")
    assert {str(a) for a in plan.desired_bridge_addresses(cfg)} == {"10.221.0.1/24",
                                                                     "fd00:1:2:3::1/64"}


def test_address_plan_never_removes_addresses_outside_our_ranges():
    cfg = config(partitions=1)
    actual = {ipaddress.ip_interface("192.168.50.1/24"),       # someone else's
              ipaddress.ip_interface("10.221.0.9/32"),         # ours, stale
              ipaddress.ip_interface("10.221.0.1/24")}         # ours, wanted
    to_add, to_remove = plan.plan_addresses(cfg, actual)
    assert [str(a) for a in to_remove] == ["10.221.0.9/32"]
    assert "10.221.0.2/32" in {str(a) for a in to_add}
    assert all("192.168.50.1" not in str(a) for a in to_add + to_remove)


def test_tap_plan_touches_only_our_name_pattern():
    cfg = config(partitions=2, tap=True)
    to_add, to_remove = plan.plan_taps(cfg, {"slaptap0", "slaptap5", "eth0", "slaptapX"})
    assert to_add == ["slaptap1"] and to_remove == ["slaptap5"]
    assert plan.plan_taps(config(tap=False), {"slaptap0"}) == ([], ["slaptap0"])


@pytest.mark.parametrize("changes, words", [
    ({"ipv4_range": "10.221.0.0/30"}, "fewer than the 4 partitions"),
    ({"ipv4_range": "8.8.8.0/24"}, "not a private range"),
    ({"ipv4_range": "nonsense"}, "not an IPv4 network"),
    ({"ipv6_range": "10.0.0.0/8"}, "not an IPv6 network"),
    ({"ipv6_range": "fd00::/127"}, "too small"),
    ({"bridge_type": "vxlan"}, "bridge_type 'vxlan' is unknown"),
    ({"isolation": "vm"}, "isolation"),
    ({"user_prefix": "Bad Prefix"}, "user_prefix"),
    ({"bridge": "a-very-long-bridge-name"}, "bridge"),
    ({"instance_root": "relative/path"}, "absolute"),
    ({"partitions": -1}, "partitions"),
    ({"warm_partitions": -1}, "warm_partitions = -1: must be 0 (none) or more"),
])
def test_bad_configs_are_refused_with_the_reason(changes, words):
    with pytest.raises(UsageError) as info:
        nodeconfig.check(config(**changes))
    assert words in str(info.value)


def test_ranges_overlapping_the_machines_networks_are_refused():
    machine = [ipaddress.ip_network("10.221.0.0/16"), ipaddress.ip_network("fd00:1:2:3::/64")]
    with pytest.raises(UsageError) as info:
        nodeconfig.check(config(), machine)
    assert "overlaps 10.221.0.0/16" in str(info.value)
    assert "overlaps fd00:1:2:3::/64" in str(info.value)


def test_a_free_private_range_is_picked():
    assert nodeconfig.pick_ipv4_range([]) == "10.221.0.0/16"
    assert nodeconfig.pick_ipv4_range([ipaddress.ip_network("10.0.0.0/8")]) == "172.29.0.0/16"


def test_ula_range_is_stable_per_machine_and_unique_local():
    first = nodeconfig.ula_range("abc")
    assert first == nodeconfig.ula_range("abc") != nodeconfig.ula_range("abd")
    network = ipaddress.ip_network(first)
    assert network.prefixlen == 64 and network.subnet_of(ipaddress.ip_network("fd00::/8"))
    taken = nodeconfig.ula_range("abc", [network])
    assert taken != first and not ipaddress.ip_network(taken).overlaps(network)


def test_global_range_is_a_slice_of_the_machines_prefix():
    assert nodeconfig.global_range("2001:db8:1:2::10", 64) == "2001:db8:1:2:5a5a::/80"
    assert not nodeconfig.is_global_v6("2001:db8::1")      # documentation prefix
    assert nodeconfig.global_range("2001:db8:1:2::10", 96) is None
    assert nodeconfig.is_global_v6("2a01:4f8::1")
    assert not nodeconfig.is_global_v6("fd00::2")


def test_config_file_round_trip_keeps_every_value(tmp_path):
    cfg = config(credential="snn_secret", tap=True, master="http://m:1")
    path = nodeconfig.save(cfg, tmp_path / "node.cfg")
    assert path.stat().st_mode & 0o777 == 0o600
    assert nodeconfig.load(path) == cfg


@pytest.mark.parametrize("text, words", [
    ("[node]\npartitions = many\n", "not a valid number"),
    ("[node]\ncolour = blue\n", "unknown option 'colour'"),
    ("[network]\ntap = perhaps\n", "true/false"),
    ("not an ini file", "not a valid node config"),
])
def test_bad_config_files_are_one_clear_line(tmp_path, text, words):
    path = tmp_path / "node.cfg"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        nodeconfig.load(path)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_missing_config_says_how_to_make_one(tmp_path):
    with pytest.raises(UsageError, match="node register"):
        nodeconfig.load(tmp_path / "absent.cfg")

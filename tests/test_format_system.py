"""Enrolling and formatting for real, as root: users, directories, a bridge and
addresses (inside a network namespace made for the test), and the master's view.

Every name is unique to the test; finalizers remove what the test made even
when it fails, and nothing else is touched.
"""

import grp
import json
import os
import pwd
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from slapnode import format as fmt
from slapnode import nodeconfig
from slapnode.client import Client
from slapnode.errors import UsageError
from slapnode.format import network, plan, users
from slapnode.node import register as reg

from .conftest import run_cli, unique_name

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="formatting needs root")


@pytest.fixture
def netns():
    from pyroute2 import netns as nsmod

    name = f"sn-{secrets.token_hex(4)}"
    nsmod.create(name)
    try:
        yield name
    finally:
        nsmod.remove(name)


def _remove_ours(prefix, software_user):
    """Delete users this test made (our marker and our unique prefix only)."""
    for user in users.all_users():
        mine = (user.name.startswith(prefix) and user.gecos.startswith(plan.PARTITION_MARK)) or \
               (user.name == software_user and user.gecos.startswith(plan.SOFTWARE_MARK))
        if mine:
            users.delete_user(user.name)


@dataclass
class Node:
    config_path: Path
    name: str
    master: object

    @property
    def config(self):
        return nodeconfig.load(self.config_path)

    def set(self, **changes):
        config = self.config
        for key, value in changes.items():
            setattr(config, key, value)
        nodeconfig.save(config, self.config_path)

    def cli(self, *args):
        return run_cli([*args, "--config", str(self.config_path)])

    def client(self):
        config = self.config
        return Client(config.master, config.credential, retries=0)

    def ns(self, *cmd):
        return subprocess.run(["ip", "netns", "exec", self.config.netns, *cmd],
                              capture_output=True, text=True, check=True).stdout


@pytest.fixture
def tmp_path(reachable_dir):
    """Here, a directory the partition and software users can reach (format checks)."""
    return reachable_dir


@pytest.fixture
def node(master, netns, tmp_path):
    """A registered node whose network lives in its own namespace."""
    tag = secrets.token_hex(3)
    prefix, software_user = f"sn{tag}u", f"sn{tag}s"
    config_path = tmp_path / "node.cfg"
    name = unique_name("node")
    token = master.client().create_enrollment_token(name, scope="public")["token"]
    result = run_cli(["node", "register", "--master", master.url, "--token", token,
                      "--config", str(config_path), "--partitions", "3", "--user-prefix", prefix,
                      "--instance-root", str(tmp_path / "srv"), "--software-root",
                      str(tmp_path / "soft"), "--bridge", f"snb{tag}", "--isolation", "user"])
    assert result.exit_code == 0, result.stderr
    handle = Node(config_path, name, master)
    handle.set(netns=netns, software_user=software_user, state_dir=str(tmp_path / "state"))
    initial = handle.config
    try:
        yield handle
    finally:
        try:
            try:
                fmt.reconcile(handle.config, None, remove_all=True, force=True)
            except UsageError:      # the test broke the config on purpose
                fmt.reconcile(initial, None, remove_all=True, force=True)
        finally:
            _remove_ours(prefix, software_user)     # whatever happened above


def test_register_writes_a_private_config_and_reports_capacity(master, node):
    path = node.config_path
    assert path.stat().st_mode & 0o777 == 0o600
    config = node.config
    assert config.credential.startswith("snn_") and config.name == node.name
    assert config.master == master.url
    text = path.read_text()
    assert "snn_" in text
    computers = {c["name"]: c for c in master.client().list_computers()}
    assert computers[node.name]["cpus"] == os.cpu_count()
    assert computers[node.name]["ram_mb"] > 0 and computers[node.name]["arch"]


def test_register_refuses_a_used_or_unknown_token(master, tmp_path):
    name = unique_name("node")
    token = master.client().create_enrollment_token(name, scope="public")["token"]
    args = ["node", "register", "--master", master.url, "--isolation", "user"]
    first = run_cli([*args, "--token", token, "--config", str(tmp_path / "a.cfg")])
    assert first.exit_code == 0, first.stderr
    again = run_cli([*args, "--token", token, "--config", str(tmp_path / "b.cfg")])
    assert again.exit_code == 1 and "already used" in again.stderr
    unknown = run_cli([*args, "--token", "sne_nope", "--config", str(tmp_path / "c.cfg")])
    assert unknown.exit_code == 1 and "unknown enrollment token" in unknown.stderr
    assert not (tmp_path / "b.cfg").exists() and not (tmp_path / "c.cfg").exists()


def test_register_refuses_a_bad_config_before_spending_the_token(master, tmp_path):
    name = unique_name("node")
    token = master.client().create_enrollment_token(name, scope="public")["token"]
    bad = run_cli(["node", "register", "--master", master.url, "--token", token, "--config",
                   str(tmp_path / "n.cfg"), "--ipv4-range", "10.9.9.0/30", "--partitions", "8"])
    assert bad.exit_code == 2 and "fewer than the 8 partitions" in bad.stderr
    good = run_cli(["node", "register", "--master", master.url, "--token", token, "--config",
                    str(tmp_path / "n.cfg"), "--isolation", "user"])
    assert good.exit_code == 0, good.stderr


def test_format_makes_users_directories_and_addresses(node):
    result = node.cli("node", "format")
    assert result.exit_code == 0, result.stderr
    config = node.config
    for spec in plan.desired_partitions(config):
        entry = pwd.getpwnam(spec.user)
        assert entry.pw_dir == spec.path and entry.pw_shell == users.NOLOGIN
        assert grp.getgrgid(entry.pw_gid).gr_name == spec.user
        with open("/etc/shadow") as shadow:
            line = next(l for l in shadow if l.startswith(spec.user + ":"))
        assert line.split(":")[1].startswith("!")           # no password: locked
        st = os.stat(spec.path)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (entry.pw_uid, entry.pw_gid, 0o750)
        for sub in ("etc", "var/log", "var/run", "srv", "tmp"):
            assert os.stat(Path(spec.path) / sub).st_uid == entry.pw_uid
    pwd.getpwnam(config.software_user)              # the software user exists ...
    st = os.stat(config.software_root)              # ... and the software root is root's
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o755   # (docs/security.md)
    addresses = node.ns("ip", "-br", "addr", "show", "dev", config.bridge)
    assert f"{nodeconfig.gateway_v4(config)}/" in addresses
    for spec in plan.desired_partitions(config):
        assert f"{spec.ipv4}/32" in addresses and f"{spec.ipv6}/128" in addresses


def test_format_reports_the_partitions_to_the_master(node):
    assert node.cli("node", "format").exit_code == 0
    doc = node.client().desired_state()
    assert [p["reference"] for p in doc["partitions"]] == ["slappart0", "slappart1", "slappart2"]
    computers = {c["name"]: c for c in node.master.client().list_computers()}
    assert computers[node.name]["partitions"] == 3 and computers[node.name]["free"] == 3


def test_format_again_changes_nothing(node):
    assert node.cli("node", "format").exit_code == 0
    revision = node.client().desired_state()["revision"]
    before = node.ns("ip", "-br", "addr")
    uids = [pwd.getpwnam(s.user).pw_uid for s in plan.desired_partitions(node.config)]
    again = node.cli("node", "format", "--json")
    assert again.exit_code == 0, again.stderr
    outcome = json.loads(again.stdout)
    assert outcome["added"] == [] and outcome["addresses_added"] == 0
    assert node.ns("ip", "-br", "addr") == before
    assert uids == [pwd.getpwnam(s.user).pw_uid for s in plan.desired_partitions(node.config)]
    assert node.client().desired_state()["revision"] == revision


def test_growing_keeps_every_partitions_addresses(node):
    assert node.cli("node", "format").exit_code == 0
    first = {p["reference"]: p for p in json.loads(node.cli("node", "status", "--json").stdout)["partitions"]}
    node.set(partitions=5)
    assert node.cli("node", "format").exit_code == 0
    grown = {p["reference"]: p for p in json.loads(node.cli("node", "status", "--json").stdout)["partitions"]}
    assert len(grown) == 5
    for ref, row in first.items():
        assert (grown[ref]["ipv4"], grown[ref]["ipv6"], grown[ref]["uid"]) == \
               (row["ipv4"], row["ipv6"], row["uid"])
    assert all(r["formatted"] for r in grown.values())


def test_shrinking_refuses_a_busy_partition_and_removes_free_ones(node, master):
    node.set(partitions=4)
    assert node.cli("node", "format").exit_code == 0
    title = unique_name("sr")
    master.client().add_software(f"http://releases.example/{title}.cfg", title)
    _, token = master.new_user()
    # fill slappart0..2 so that the one in slappart2 blocks shrinking to 2
    for i in range(3):
        master.client(token).request_instance(title=f"i{i}", software=title,
                                              node={"computer": node.name})
    node.set(partitions=2)
    refused = node.cli("node", "format")
    assert refused.exit_code == 1
    assert "slappart2" in refused.stderr and "busy" in refused.stderr
    assert pwd.getpwnam(node.config.partition_user(3))             # nothing removed
    assert len(node.client().desired_state()["partitions"]) == 4
    master.client(token).change_instance("i2", "destroyed")
    held = next(p for p in node.client().desired_state()["partitions"] if p["reference"] == "slappart2")
    node.client().report(instances=[{"partition": "slappart2", "instance_id": held["instance"]["id"],
                                     "status": "destroyed"}])
    shrunk = node.cli("node", "format")
    assert shrunk.exit_code == 0, shrunk.stderr
    for index in (2, 3):
        with pytest.raises(KeyError):
            pwd.getpwnam(node.config.partition_user(index))
        assert not node.config.partition_path(index).exists()
    assert len(node.client().desired_state()["partitions"]) == 2


def test_a_bad_config_changes_nothing(node):
    node.set(bridge_type="vxlan")
    result = node.cli("node", "format")
    assert result.exit_code == 2 and "bridge_type 'vxlan' is unknown" in result.stderr
    with pytest.raises(KeyError):
        pwd.getpwnam(node.config.partition_user(0))
    assert node.config.bridge not in node.ns("ip", "-br", "link")


def test_a_range_overlapping_the_machine_is_refused(node):
    config = node.config
    node.ns("ip", "link", "add", "sndummy0", "type", "bridge")
    node.ns("ip", "addr", "add", str(config.ipv4_network.network_address + 77) + "/24",
            "dev", "sndummy0")
    result = node.cli("node", "format")
    assert result.exit_code == 2 and "overlaps" in result.stderr
    with pytest.raises(KeyError):
        pwd.getpwnam(config.partition_user(0))


def test_a_foreign_user_with_a_partition_name_is_never_taken(node):
    config = node.config
    victim = config.partition_user(1)
    subprocess.run(["useradd", "--system", "--no-create-home", "--comment", "not slapnode",
                    victim], check=True)
    try:
        result = node.cli("node", "format")
        assert result.exit_code == 2 and victim in result.stderr
        assert pwd.getpwnam(victim).pw_gecos == "not slapnode"
        with pytest.raises(KeyError):
            pwd.getpwnam(config.partition_user(0))
    finally:
        users.delete_user(victim)


def test_register_refuses_a_taken_user_prefix_before_spending_the_token(master, tmp_path):
    """docs/enrolling.md promises it: the check runs before the token is exchanged."""
    tag = secrets.token_hex(3)
    victim = f"sn{tag}u0"
    subprocess.run(["useradd", "--system", "--no-create-home", "--comment", "not slapnode",
                    victim], check=True)
    try:
        name = unique_name("node")
        token = master.client().create_enrollment_token(name, scope="public")["token"]
        args = ["node", "register", "--master", master.url, "--token", token, "--isolation",
                "user", "--config", str(tmp_path / "n.cfg"), "--instance-root",
                str(tmp_path / "srv"), "--software-root", str(tmp_path / "soft")]
        taken = run_cli([*args, "--user-prefix", f"sn{tag}u"])
        assert taken.exit_code == 2 and victim in taken.stderr and "not used" in taken.stderr
        assert not (tmp_path / "n.cfg").exists()
        again = run_cli([*args, "--user-prefix", f"sn{tag}v"])     # the same token still works
        assert again.exit_code == 0, again.stderr
    finally:
        users.delete_user(victim)


def test_foreign_addresses_and_interfaces_are_left_alone(node):
    assert node.cli("node", "format").exit_code == 0
    config = node.config
    node.ns("ip", "addr", "add", "192.168.77.1/24", "dev", config.bridge)
    node.ns("ip", "link", "add", "snother0", "type", "bridge")
    node.set(partitions=2)
    assert node.cli("node", "format").exit_code == 0
    assert "192.168.77.1/24" in node.ns("ip", "-br", "addr", "show", "dev", config.bridge)
    assert node.cli("node", "unformat").exit_code == 0
    assert "snother0" in node.ns("ip", "-br", "link")
    assert config.bridge not in node.ns("ip", "-br", "link")


def test_taps_belong_to_their_partition_users(node):
    node.set(tap=True, tap_prefix=f"snt{secrets.token_hex(2)}")
    assert node.cli("node", "format").exit_code == 0
    config = node.config
    with network.open_ipr(config.netns) as ipr:
        for spec in plan.desired_partitions(config):
            link = ipr.get_links(ifname=spec.tap)[0]
            data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
            assert data.get_attr("IFLA_TUN_OWNER") == pwd.getpwnam(spec.user).pw_uid
            assert link.get_attr("IFLA_MASTER") == network.link_index(ipr, config.bridge)


def test_unformat_removes_everything_format_made(node):
    assert node.cli("node", "format").exit_code == 0
    config = node.config
    result = node.cli("node", "unformat")
    assert result.exit_code == 0, result.stderr
    for spec in plan.desired_partitions(config):
        with pytest.raises(KeyError):
            pwd.getpwnam(spec.user)
        with pytest.raises(KeyError):
            grp.getgrnam(spec.user)
        assert not Path(spec.path).exists()
    with pytest.raises(KeyError):
        pwd.getpwnam(config.software_user)
    assert not Path(config.software_root).exists()
    assert config.bridge not in node.ns("ip", "-br", "link")
    assert node.client().desired_state()["partitions"] == []


def test_unformat_refuses_while_an_instance_is_there(node, master):
    assert node.cli("node", "format").exit_code == 0
    title = unique_name("sr")
    master.client().add_software(f"http://releases.example/{title}.cfg", title)
    _, token = master.new_user()
    master.client(token).request_instance(title="i", software=title, node={"computer": node.name})
    result = node.cli("node", "unformat")
    assert result.exit_code == 1 and "busy" in result.stderr
    assert pwd.getpwnam(node.config.partition_user(0))


def test_status_shows_users_addresses_and_busy_partitions(node, master):
    assert node.cli("node", "format").exit_code == 0
    title = unique_name("sr")
    master.client().add_software(f"http://releases.example/{title}.cfg", title)
    _, token = master.new_user()
    master.client(token).request_instance(title="busy-one", software=title,
                                          node={"computer": node.name})
    status = json.loads(node.cli("node", "status", "--json").stdout)
    rows = {r["reference"]: r for r in status["partitions"]}
    assert rows["slappart0"]["state"] == "busy" and rows["slappart0"]["instance"] == "busy-one"
    assert rows["slappart1"]["state"] == "free" and rows["slappart1"]["formatted"]
    table = node.cli("node", "status").stdout
    assert "slappart0" in table and "busy-one" in table


def test_master_down_formats_locally_and_says_so(node):
    node.set(master="http://127.0.0.1:9")
    result = node.cli("node", "format")
    assert result.exit_code == 1
    assert "formatted locally" in result.stderr and "cannot reach the master" in result.stderr
    assert pwd.getpwnam(node.config.partition_user(0))


def test_a_global_prefix_gives_partitions_global_addresses_with_ndp_proxy(node):
    config = node.config
    node.ns("ip", "link", "add", "snup0", "type", "bridge")
    node.ns("ip", "link", "set", "snup0", "up")
    node.ns("ip", "-6", "addr", "add", "2a0c:b641:42:7::10/64", "dev", "snup0", "nodad")
    built, notes = reg.build_config(replace_v6(config), config.master, {}, netns=config.netns)
    assert built.ipv6_source == "global" and built.ipv6_uplink == "snup0"
    assert built.ipv6_range == "2a0c:b641:42:7:5a5a::/80"
    assert any("global IPv6" in n for n in notes)
    node.set(ipv6_range=built.ipv6_range, ipv6_source="global", ipv6_uplink="snup0")
    assert node.cli("node", "format").exit_code == 0
    proxies = node.ns("ip", "-6", "neigh", "show", "proxy")
    for spec in plan.desired_partitions(node.config):
        assert spec.ipv6.startswith("2a0c:b641:42:7:5a5a:") and spec.ipv6 in proxies
    assert node.ns("cat", "/proc/sys/net/ipv6/conf/snup0/proxy_ndp").strip() == "1"
    routes = node.ns("ip", "-6", "route", "show", "2a0c:b641:42:7:5a5a::/80")
    assert f"dev {node.config.bridge}" in routes


def replace_v6(config):
    config = nodeconfig.NodeConfig(**config.__dict__)
    config.ipv6_range = ""
    return config

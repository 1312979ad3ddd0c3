"""The user CLI: the contract other tools use. Exit codes, one-line errors, --json."""

import json
import os
import threading
import time

import click
import pytest

from slapnode.cli import cli

from .conftest import run_cli, unique_name


def all_commands(group=cli, path=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from all_commands(command, path + (name,))
        else:
            yield path + (name,)


@pytest.mark.parametrize("path", sorted(all_commands()), ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    result = run_cli([*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.stdout, f"`slapnode {' '.join(path)} --help` shows no example"


def test_top_level_help_shows_examples():
    result = run_cli(["--help"])
    assert result.exit_code == 0 and "Examples" in result.stdout


def test_usage_errors_exit_2_with_one_line():
    for args in (["instance", "request"], ["instance", "request", "t", "hello", "--node", "x"],
                 ["instance", "request", "t", "hello", "--parameter", "novalue"],
                 ["master", "serve", "--data-dir", "/nonexistent", "--listen", "nope"]):
        result = run_cli(args)
        assert result.exit_code == 2, args
        lines = result.stderr.strip().splitlines()
        assert len([l for l in lines if l.startswith("Error")]) == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_unreachable_master_is_one_clear_line():
    result = run_cli(["software", "list"], master="http://127.0.0.1:9", token="snu_x")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the master" in lines[0]


def test_missing_master_says_how_to_give_one():
    result = run_cli(["software", "list"], master=None, token=None)
    assert result.exit_code == 2
    assert "--master" in result.stderr


def test_client_config_file_supplies_master_and_token(master, tmp_path):
    config = tmp_path / "client.cfg"
    config.write_text(f"[client]\nmaster = {master.url}\ntoken = {master.admin_token}\n")
    result = run_cli(["user", "whoami"], env={"SLAPNODE_CLIENT_CONFIG": str(config)})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "admin (admin)"


def test_user_add_prints_a_working_token_last(master):
    name = unique_name("cli")
    result = master.cli("user", "add", name)
    assert result.exit_code == 0, result.stderr
    token = result.last_line
    assert master.cli("user", "whoami", token=token).stdout.strip() == name


def test_non_admin_cannot_add_software(master):
    _, token = master.new_user()
    result = master.cli("software", "add", "http://x.example/a.cfg", "--title", unique_name("t"),
                        token=token)            # (nothing is fetched for a non-admin)
    assert result.exit_code == 1
    assert "not an admin" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_software_add_list_show_supply_remove(master, make_node, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}}))
    title = unique_name("sr")
    url = f"http://releases.example/{title}.cfg"
    assert master.cli("software", "add", url, "--title", title, "--price", "2.5",
                      "--schema", str(schema)).exit_code == 0
    listed = json.loads(master.cli("software", "list", "--json").stdout)
    entry = next(e for e in listed if e["title"] == title)
    assert entry["price_per_month"] == "2.50" and entry["has_schema"]
    node = make_node(partitions=1)
    assert master.cli("software", "supply", title, "--node", node.name).exit_code == 0
    shown = json.loads(master.cli("software", "show", url, "--json").stdout)
    assert shown["supplies"][0]["node"] == node.name
    assert master.cli("software", "remove", title, "--node", node.name).exit_code == 0
    assert [(s["url"], s["state"]) for s in node.desired()["software"]] == [(url, "destroyed")]


def test_bad_schema_file_is_a_usage_error(master, tmp_path):
    bad = tmp_path / "schema.json"
    bad.write_text("{nope")
    result = master.cli("software", "add", "http://x.example/b.cfg", "--title", unique_name("t"),
                        "--schema", str(bad))
    assert result.exit_code == 2 and "not valid JSON" in result.stderr


def test_node_token_create_and_list(master):
    name = unique_name("node")
    result = master.cli("node", "token", "create", name)
    assert result.exit_code == 0 and result.last_line.startswith("sne_")
    rows = json.loads(master.cli("node", "list", "--json").stdout)
    assert all(r["name"] != name for r in rows)   # not enrolled yet: not a computer yet
    from slapnode.client import Client

    node = Client(master.url, retries=0).enroll(result.last_line,
                                                capacity={"cpus": 3, "ram_mb": 2048})
    Client(master.url, node["credential"], retries=0).report_partitions(
        [{"reference": f"slappart{i}"} for i in range(2)])
    rows = {r["name"]: r for r in json.loads(master.cli("node", "list", "--json").stdout)}
    assert (rows[name]["partitions"], rows[name]["free"], rows[name]["cpus"],
            rows[name]["ram_mb"]) == (2, 2, 3, 2048)
    table = master.cli("node", "list").stdout
    assert name in table and "PARTITIONS" in table


@pytest.fixture
def catalog_entry(master):
    title = unique_name("sr")
    master.client().add_software(f"http://releases.example/{title}.cfg", title)
    return title


def test_instance_request_from_an_xml_file(master, make_node, catalog_entry, tmp_path):
    node = make_node(partitions=1)
    xml = tmp_path / "params.xml"
    xml.write_text('<?xml version="1.0"?><instance><parameter id="name">Ada</parameter></instance>')
    _, token = master.new_user()
    result = master.cli("instance", "request", "x", catalog_entry, "--parameters-xml", str(xml),
                        "--node", f"computer={node.name}", "--json", token=token)
    assert result.exit_code == 0, result.stderr
    view = json.loads(result.stdout)
    for key in ("title", "software", "type", "state", "status", "node", "partition",
                "parameters", "connection"):
        assert key in view
    assert view["parameters"] == {"name": "Ada"} and view["node"] == node.name


def test_instance_request_with_json_in_xml_from_stdin(master, make_node, catalog_entry):
    make_node(partitions=1)
    _, token = master.new_user()
    doc = '<instance><parameter id="_">{"n": 3, "list": [1]}</parameter></instance>'
    result = master.cli("instance", "request", "x", catalog_entry, "--parameters-xml", "-",
                        "--json", token=token, input=doc)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["parameters"] == {"n": 3, "list": [1]}


@pytest.mark.parametrize("doc", [
    '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><instance><parameter id="a">&e;</parameter></instance>',
    "<instance><parameter id='a'>1</parameter>",
    "<instance><parameter id='a'>1</parameter><parameter id='a'>2</parameter></instance>",
])
def test_hostile_or_malformed_xml_is_refused_and_nothing_is_stored(master, catalog_entry, doc):
    _, token = master.new_user()
    result = master.cli("instance", "request", "x", catalog_entry, "--parameters-xml", "-",
                        token=token, input=doc)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "root:" not in result.stderr
    assert master.client(token).list_instances() == []


def test_duplicate_parameter_is_a_usage_error(master, catalog_entry):
    result = master.cli("instance", "request", "x", catalog_entry, "--parameter", "a=1",
                        "--parameter", "a=2")
    assert result.exit_code == 2 and "twice" in result.stderr


def test_unknown_software_fails_with_the_reason(master):
    _, token = master.new_user()
    result = master.cli("instance", "request", "x", "no-such-release", token=token)
    assert result.exit_code == 1
    assert "neither a catalog URL nor a catalog title" in result.stderr


def test_wait_times_out_with_exit_1(master, catalog_entry):
    _, token = master.new_user()
    result = master.cli("instance", "request", "x", catalog_entry, "--node", "computer=nowhere",
                        "--wait", "0.5", token=token)
    assert result.exit_code == 1
    assert "still pending after 0.5 s" in result.stderr


def test_wait_returns_the_connection_parameters_once_ready(master, make_node, catalog_entry):
    node = make_node(partitions=1)
    _, token = master.new_user()
    revision = node.desired()["revision"]

    def act_as_node():
        instance = node.client.desired_state(after=revision, wait=10)
        instance = next(p["instance"] for p in instance["partitions"] if p["instance"])
        node.report_instance("slappart0", instance["id"], "ready", {"url": "http://10.9.0.2:8080/"})

    helper = threading.Thread(target=act_as_node)
    helper.start()
    result = master.cli("instance", "request", "w", catalog_entry, "--node",
                        f"computer={node.name}", "--wait", "20", token=token)
    helper.join(20)
    assert result.exit_code == 0, result.stderr
    assert "ready" in result.stdout and "url = http://10.9.0.2:8080/" in result.stdout


def test_stop_start_destroy_and_list(master, make_node, catalog_entry):
    make_node(partitions=1)
    _, token = master.new_user()
    assert master.cli("instance", "request", "x", catalog_entry, token=token).exit_code == 0
    assert json.loads(master.cli("instance", "stop", "x", "--json", token=token).stdout)["state"] == "stopped"
    assert json.loads(master.cli("instance", "start", "x", "--json", token=token).stdout)["state"] == "started"
    assert json.loads(master.cli("instance", "destroy", "x", "--json", token=token).stdout)["state"] == "destroyed"
    rows = json.loads(master.cli("instance", "list", "--json", token=token).stdout)
    assert [r["title"] for r in rows] == ["x"]
    table = master.cli("instance", "list", token=token).stdout
    assert table.splitlines()[0].split()[:3] == ["TITLE", "STATUS", "STATE"]


def test_show_unknown_instance_is_one_line(master):
    result = master.cli("instance", "show", "nope")
    assert result.exit_code == 1 and "no instance 'nope'" in result.stderr


def test_show_xml_prints_connection_parameters_as_slapos_xml(master, make_node, catalog_entry):
    node = make_node(partitions=1)
    _, token = master.new_user()
    master.cli("instance", "request", "x", catalog_entry, "--node", f"computer={node.name}",
               token=token)
    instance = node.instance_on("slappart0")
    node.report_instance("slappart0", instance["id"], "ready", {"url": "http://h/"})
    result = master.cli("instance", "show", "x", "--xml", token=token)
    assert '<parameter id="url">http://h/</parameter>' in result.stdout


def test_bad_listen_address_is_a_usage_error(tmp_path):
    result = run_cli(["master", "serve", "--data-dir", str(tmp_path), "--listen", "nowhere"])
    assert result.exit_code == 2 and "HOST:PORT" in result.stderr


def test_serve_before_init_says_to_run_init(tmp_path):
    result = run_cli(["master", "serve", "--data-dir", str(tmp_path / "fresh"),
                      "--listen", "127.0.0.1:1"])
    assert result.exit_code == 1 and "master init" in result.stderr


def test_init_with_an_unreachable_database_is_one_line(tmp_path):
    result = run_cli(["master", "init", "--data-dir", str(tmp_path),
                      "--db", "postgresql+psycopg://nobody:x@127.0.0.1:9/none"])
    assert result.exit_code == 1
    assert "cannot use the database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_request_wait_exits_1_when_the_instance_ends_in_error(master, make_node, catalog_entry):
    node = make_node(partitions=1)
    _, token = master.new_user()
    import threading

    def fail_once_placed():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            instance = node.instance_on("slappart0")
            if instance:
                node.report_instance("slappart0", instance["id"], "error",
                                     reason="service web keeps failing (exited)")
                return
            time.sleep(0.05)
    reporter = threading.Thread(target=fail_once_placed)
    reporter.start()
    result = master.cli("instance", "request", "broken", catalog_entry, "--node",
                        f"computer={node.name}", "--wait", "30", token=token)
    reporter.join()
    assert result.exit_code == 1
    assert "in error: service web keeps failing" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_master_init_keeps_its_data_directory_private(tmp_path):
    data = tmp_path / "m"
    result = run_cli(["master", "init", "--data-dir", str(data)])
    assert result.exit_code == 0, result.stderr
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
    os.chmod(data, 0o755)                           # drifted: init makes it private again
    assert run_cli(["master", "init", "--data-dir", str(data)]).exit_code == 0
    assert data.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("option,value", [("--dns", "nonsense"), ("--dns", ":53"),
                                          ("--dns", "127.0.0.1:70000"),
                                          ("--dns-advertise", "nowhere")])
def test_bad_dns_address_is_a_usage_error(tmp_path, option, value):
    args = ["master", "serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:1"]
    if option == "--dns-advertise":
        args += ["--dns", "127.0.0.1:5353"]
    result = run_cli(args + [option, value])
    assert result.exit_code == 2 and f"{option} {value!r}: expected HOST:PORT" in result.stderr


@pytest.mark.parametrize("zone", ["Bad_Zone", "a..b", "-x.test", "x" * 64 + ".test"])
def test_a_domain_that_is_no_dns_zone_is_refused_and_nothing_is_made(tmp_path, zone):
    data = tmp_path / "m"
    result = run_cli(["master", "init", "--data-dir", str(data), "--domain", zone])
    assert result.exit_code == 2 and "is not a DNS zone" in result.stderr
    assert not data.exists() or not any(data.iterdir())


def test_token_create_list_revoke(master):
    _, token = master.new_user()
    made = master.cli("token", "create", "ci-job", "--expires", "30d", token=token)
    assert made.exit_code == 0 and made.last_line.startswith("snu_")
    listed = json.loads(master.cli("token", "list", "--json", token=token).stdout)
    assert [t["name"] for t in listed] == ["ci-job", "default"]
    assert listed[0]["expires_at"] and made.last_line not in master.cli("token", "list", token=token).stdout
    bad = master.cli("token", "create", "x", "--expires", "soonish", token=token)
    assert bad.exit_code == 2 and "give a duration" in bad.stderr
    assert master.cli("token", "revoke", "ci-job", token=token).exit_code == 0
    gone = master.cli("user", "whoami", token=made.last_line)
    assert gone.exit_code == 1 and "unknown token" in gone.stderr


def test_computer_scope_network_group_and_history_from_the_cli(master, make_node, catalog_entry):
    alice, alice_token = master.new_user()
    bob, bob_token = master.new_user()
    node = make_node(partitions=1, owner=alice_token, scope="personal")
    group, net = unique_name("g"), unique_name("net")
    assert master.cli("group", "create", group, token=alice_token).exit_code == 0
    assert master.cli("group", "add", group, bob, token=alice_token).exit_code == 0
    scoped = master.cli("computer", "scope", node.name, "friends", "--group", group, token=alice_token)
    assert scoped.exit_code == 0 and f"scope friends (groups: {group})" in scoped.stdout
    assert master.cli("network", "create", net, token=alice_token).exit_code == 0
    assert master.cli("network", "add", net, node.name, token=alice_token).exit_code == 0
    nets = json.loads(master.cli("network", "list", "--json", token=alice_token).stdout)
    assert nets[0]["computers"] == [node.name]
    result = master.cli("instance", "request", "w", catalog_entry, "--node", f"network={net}",
                        "--group", group, "--json", token=alice_token)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["node"] == node.name
    seen = master.cli("instance", "show", "w", "--owner", alice, token=bob_token)
    assert seen.exit_code == 0 and f"targets      network={net}" in seen.stdout
    assert master.cli("instance", "stop", "w", "--owner", alice, token=bob_token).exit_code == 0
    history = master.cli("instance", "history", "w", token=alice_token).stdout
    assert "requested" in history and bob in history and "stopped" in history
    computers = json.loads(master.cli("computer", "list", "--json", token=bob_token).stdout)
    assert node.name in [c["name"] for c in computers]
    refused = master.cli("computer", "scope", node.name, "public", token=bob_token)
    assert refused.exit_code == 1 and "is not yours" in refused.stderr


def test_software_add_reads_the_schema_beside_the_profile(master):
    title = unique_name("hello")
    url = f"{master.url}/software-releases/hello/software.cfg"
    result = master.cli("software", "add", f"{url}?{title}", "--title", title, "--version", "1.0")
    # (a query string makes the URL new; the schema is still the one beside the profile)
    assert result.exit_code == 0, result.stderr
    assert "schema from" in result.stderr
    shown = json.loads(master.cli("software", "show", title, "--json").stdout)
    assert shown["has_schema"] and shown["version"] == "1.0"
    assert shown["schema"]["properties"]["name"]["type"] == "string"
    bare = master.cli("software", "add", f"{url}?{title}-2", "--title", title, "--version", "1.1",
                      "--no-schema")
    assert bare.exit_code == 0 and "schema from" not in bare.stderr

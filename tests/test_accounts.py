"""The master's accounts (issue 14): named tokens, disabled users, passwords, computers
that belong to who enrolled them and take instances as their allocation scope says,
networks, groups, and the audit trail. A real master over HTTP, on SQLite and PostgreSQL."""

import datetime as dt
import time

from sqlalchemy import create_engine, text

from slapnode.client import Client

from .conftest import unique_name
from .test_master_api import add_release, expect_error


def user(master):
    name, token = master.new_user()
    return name, master.client(token)


# -- tokens ------------------------------------------------------------------------------

def test_a_user_holds_named_tokens_and_a_revoked_one_stops_at_once(master):
    name, alice = user(master)
    made = alice.create_token("laptop")
    assert made["name"] == "laptop" and made["token"].startswith("snu_")
    laptop = master.client(made["token"])
    assert laptop.me()["name"] == name
    assert laptop.list_instances() == []           # a read: now in the master's token cache
    assert [t["name"] for t in alice.list_tokens()] == ["default", "laptop"]
    assert "secret" not in str(alice.list_tokens()) and made["token"] not in str(alice.list_tokens())
    assert "already have a token named 'laptop'" in expect_error(409, alice.create_token, "laptop")
    alice.revoke_token("laptop")
    # at once: a read (cached before) and a write
    assert "unknown token" in expect_error(401, laptop.list_instances)
    assert "unknown token" in expect_error(401, laptop.create_token, "again")
    assert [t["name"] for t in alice.list_tokens()] == ["default"]
    assert "no token named 'laptop'" in expect_error(404, alice.revoke_token, "laptop")


def test_a_token_with_an_expiry_stops_working_when_it_expires(master):
    _, alice = user(master)
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)).isoformat()
    made = alice.create_token("short", expires_at=soon)
    short = master.client(made["token"])
    assert short.list_instances() == []
    assert {t["name"]: t["expired"] for t in alice.list_tokens()}["short"] is False
    time.sleep(2.5)
    assert "expired" in expect_error(401, short.list_instances)
    assert {t["name"]: t["expired"] for t in alice.list_tokens()}["short"] is True
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()
    assert "in the past" in expect_error(400, alice.create_token, "old", expires_at=past)


def test_a_disabled_user_keeps_instances_running_but_changes_nothing(master, make_node):
    url, _ = add_release(master)
    name, alice = user(master)
    node = make_node(partitions=1, owner=alice.token, scope="personal")
    alice.request_instance(title="kept", software=url, node={"computer": node.name})
    master.client().change_user(name, disabled=True)
    assert node.instance_on("slappart0")["title"] == "kept"           # still deployed
    assert alice.show_instance("kept")["state"] == "started"          # she may look
    assert "is disabled" in expect_error(403, alice.request_instance, title="new", software=url)
    assert "is disabled" in expect_error(403, alice.change_instance, "kept", "stopped")
    assert "is disabled" in expect_error(403, alice.create_token, "more")
    assert {u["name"]: u["disabled"] for u in master.client().list_users()}[name] is True
    master.client().change_user(name, disabled=False)
    assert alice.change_instance("kept", "stopped")["state"] == "stopped"
    assert "cannot disable yourself" in expect_error(409, master.client().change_user, "admin",
                                                     disabled=True)
    expect_error(403, alice.change_user, name, disabled=True)


def test_a_password_is_stored_as_argon2id_only(master):
    name, alice = user(master)
    assert "at least 10 characters" in expect_error(400, alice.set_password, name, "short")
    alice.set_password(name, "correct horse battery")
    assert alice.me()["password"] is True
    _, bob = user(master)
    expect_error(403, bob.set_password, name, "someone else's idea")
    engine = create_engine(master.db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT password_hash FROM users WHERE name = :n"),
                                  {"n": name}).scalar_one()
    finally:
        engine.dispose()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored


def test_users_have_an_email_address_and_a_bad_one_is_refused(master):
    name = unique_name("u")
    made = master.client().add_user(name, email="ada@example.org")
    assert made["email"] == "ada@example.org" and made["token"].startswith("snu_")
    assert "does not look like" in expect_error(400, master.client().add_user, unique_name("u"),
                                                email="not an address")
    assert name in {u["name"] for u in master.client().list_users()}
    expect_error(403, master.client(made["token"]).list_users)


# -- computers: owners and allocation scopes ---------------------------------------------

def test_a_personal_computer_takes_only_its_owners_instances(master, make_node):
    url, _ = add_release(master)
    _, alice = user(master)
    _, bob = user(master)
    node = make_node(partitions=2, owner=alice.token, scope="personal")
    assert "takes its owner's instances only" in expect_error(
        403, bob.request_instance, title="b", software=url, node={"computer": node.name})
    mine = alice.request_instance(title="a", software=url, node={"computer": node.name})
    assert mine["node"] == node.name and mine["status"] == "deploying"
    # without a filter, bob's instance goes anywhere but there
    other = bob.request_instance(title="b2", software=url)
    assert other["node"] != node.name
    assert node.instance_on("slappart1") is None
    bob.change_instance("b2", "destroyed")     # pending ones would take other tests' nodes


def test_a_friends_computer_takes_the_instances_of_its_groups_members(master, make_node):
    url, _ = add_release(master)
    _, alice = user(master)
    bob_name, bob = user(master)
    _, carol = user(master)
    node = make_node(partitions=2, owner=alice.token, scope="personal")
    group = unique_name("lab")
    alice.create_group(group)
    alice.add_group_member(group, bob_name)
    assert "needs the groups" in expect_error(400, alice.set_scope, node.name, "friends")
    shown = alice.set_scope(node.name, "friends", [group])
    assert shown["scope"] == "friends" and shown["friends"] == [group]
    placed = bob.request_instance(title="b", software=url, node={"computer": node.name})
    assert placed["node"] == node.name
    assert "friends only" in expect_error(403, carol.request_instance, title="c", software=url,
                                          node={"computer": node.name})
    assert node.name in [c["name"] for c in bob.list_computers()]
    assert node.name not in [c["name"] for c in carol.list_computers()]
    assert "is not yours" in expect_error(403, bob.set_scope, node.name, "public")


def test_a_closed_computer_takes_no_new_instance_and_keeps_its_own(master, make_node):
    url, _ = add_release(master)
    _, alice = user(master)
    node = make_node(partitions=2, owner=alice.token, scope="personal")
    alice.request_instance(title="old", software=url, node={"computer": node.name})
    alice.set_scope(node.name, "closed")
    assert "closed to new instances" in expect_error(
        403, alice.request_instance, title="new", software=url, node={"computer": node.name})
    assert node.instance_on("slappart0")["title"] == "old"
    assert node.instance_on("slappart1") is None
    # a pending instance is placed once the computer opens again
    _, bob = user(master)
    net = unique_name("net")
    alice.create_network(net)
    alice.add_network_computer(net, node.name)
    waiting = alice.request_instance(title="waits", software=url, node={"network": net})
    assert waiting["status"] == "pending"
    alice.set_scope(node.name, "personal")
    assert alice.show_instance("waits")["node"] == node.name


# -- networks and groups -----------------------------------------------------------------

def test_a_request_targets_one_of_the_requesters_networks(master, make_node):
    url, _ = add_release(master)
    _, alice = user(master)
    _, bob = user(master)
    first = make_node(partitions=1, owner=alice.token, scope="public")
    second = make_node(partitions=1, owner=alice.token, scope="public")
    net = unique_name("net")
    alice.create_network(net)
    alice.add_network_computer(net, second.name)
    assert alice.list_networks() == [{"name": net, "computers": [second.name],
                                      "created_at": alice.list_networks()[0]["created_at"]}]
    placed = alice.request_instance(title="n", software=url, node={"network": net})
    assert placed["node"] == second.name and placed["node_filter"] == {"network": net}
    assert alice.show_instance("n")["node_filter"] == {"network": net}
    assert "no network" in expect_error(404, bob.request_instance, title="n", software=url,
                                        node={"network": net})
    assert "no network" in expect_error(404, bob.add_network_computer, net, first.name)
    bob_net = unique_name("net")
    bob.create_network(bob_net)
    assert "is not yours" in expect_error(403, bob.add_network_computer, bob_net, first.name)
    alice.remove_network_computer(net, second.name)
    assert alice.list_networks()[0]["computers"] == []


def test_an_instance_of_a_group_is_seen_and_managed_by_its_members(master, make_node):
    url, _ = add_release(master)
    alice_name, alice = user(master)
    bob_name, bob = user(master)
    _, carol = user(master)
    node = make_node(partitions=1)
    group = unique_name("team")
    alice.create_group(group)
    alice.add_group_member(group, bob_name)
    assert {g["name"]: g["members"] for g in bob.list_groups()}[group] == sorted([alice_name, bob_name])
    assert "not a member" in expect_error(403, carol.request_instance, title="x", software=url,
                                          group=group)
    alice.request_instance(title="shared-work", software=url, group=group,
                           node={"computer": node.name})
    listed = {(i["owner"], i["title"]): i for i in bob.list_instances()}
    assert listed[(alice_name, "shared-work")]["group"] == group
    seen = bob.show_instance("shared-work", owner=alice_name)
    assert seen["node"] == node.name
    assert bob.change_instance("shared-work", "stopped", owner=alice_name)["state"] == "stopped"
    expect_error(404, carol.show_instance, "shared-work", owner=alice_name)
    assert carol.list_instances() == []
    alice.remove_group_member(group, bob_name)
    expect_error(404, bob.show_instance, "shared-work", owner=alice_name)
    assert "owns group" in expect_error(409, alice.remove_group_member, group, alice_name)
    assert "managed by its owner" in expect_error(403, bob.add_group_member, group, bob_name)


# -- the audit trail ---------------------------------------------------------------------

def test_an_instances_history_says_who_changed_what_and_never_a_secret(master, make_node):
    url, _ = add_release(master)
    alice_name, alice = user(master)
    node = make_node(partitions=1)
    alice.request_instance(title="h", software=url, parameters={"password": "hunter2-secret"},
                           node={"computer": node.name})
    instance = node.instance_on("slappart0")
    node.report_instance("slappart0", instance["id"], "ready", {"password": "s3cret-published"})
    alice.request_instance(title="h", software=url, parameters={"password": "changed-secret"},
                           node={"computer": node.name})
    alice.change_instance("h", "stopped")
    events = alice.instance_history("h")
    summary = [(e["actor"], e["action"]) for e in events]
    assert summary[:1] == [(alice_name, "requested")]
    assert (f"node:{node.name}", "ready") in summary
    assert (f"node:{node.name}", "published") in summary
    assert (alice_name, "changed") in summary and (alice_name, "stopped") in summary
    changed = next(e for e in events if e["action"] == "changed")
    assert changed["detail"]["parameters"] == ["password"]
    text_of_all = str(events)
    for secret in ("hunter2-secret", "s3cret-published", "changed-secret"):
        assert secret not in text_of_all
    assert all(e["at"] for e in events)
    expect_error(404, master.client(master.new_user()[1]).instance_history, "h")


# -- usage history -----------------------------------------------------------------------

def test_usage_reports_become_raw_samples_and_hourly_figures(master, make_node):
    url, _ = add_release(master)
    _, alice = user(master)
    owner_name, owner = user(master)
    node = make_node(partitions=1, owner=owner.token, scope="public")
    alice.request_instance(title="u", software=url, node={"computer": node.name})
    instance_id = node.instance_on("slappart0")["id"]

    def report(**figures):
        node.client.report(instances=[{"partition": "slappart0", "instance_id": instance_id,
                                       "status": "ready", "usage": figures}])
    report(cpu_seconds=10, memory_mb=100, disk_mb=5, net_in_bytes=1000, net_out_bytes=10)
    report(cpu_seconds=25, memory_mb=200, disk_mb=7, net_in_bytes=3000, net_out_bytes=30)
    report(cpu_seconds=4, memory_mb=150, disk_mb=6, net_in_bytes=500, net_out_bytes=5)  # restarted
    raw = alice.instance_usage("u", resolution="raw")
    assert [s["cpu_seconds"] for s in raw] == [10, 15, 4]
    assert [s["net_in_bytes"] for s in raw] == [1000, 2000, 500]
    hours = alice.instance_usage("u")
    if len(hours) == 2:          # the reports straddled an hour: add the two up
        hours = [{k: (a + b if isinstance(a, (int, float)) else a) for (k, a), b in
                  zip(hours[0].items(), hours[1].values())}]
    (hour,) = hours
    assert hour["cpu_seconds"] == 29 and hour["net_out_bytes"] == 35
    if hour["samples"] == 3:
        assert (hour["memory_mb_avg"], hour["memory_mb_peak"]) == (150, 200)
    computer = owner.computer_usage(node.name)
    assert sum(p["cpu_seconds"] for p in computer) == 29
    assert "its owner sees its usage" in expect_error(403, alice.computer_usage, node.name)
    expect_error(404, owner.instance_usage, "u")          # not his instance
    expect_error(422, alice.instance_usage, "u", resolution="minutely")


def test_the_master_prunes_raw_samples_after_48_hours_and_hourly_after_13_months(master, make_node):
    import datetime as dt

    from slapnode.master import usage
    from slapnode.master.core import Master
    from slapnode.master.models import UsageHourly, UsageSample

    url, _ = add_release(master)
    _, alice = user(master)
    node = make_node(partitions=1, owner=alice.token)
    alice.request_instance(title="p", software=url, node={"computer": node.name})
    instance_id = node.instance_on("slappart0")["id"]
    now = dt.datetime.now(dt.timezone.utc)
    in_process = Master(master.db_url)
    try:
        def seed(session):
            for age in (dt.timedelta(hours=49), dt.timedelta(hours=47)):
                session.add(UsageSample(instance_id=instance_id, at=now - age, cpu_seconds=1,
                                        memory_mb=1, disk_mb=1, net_in_bytes=0, net_out_bytes=0))
            for age in (dt.timedelta(days=400), dt.timedelta(days=300)):
                session.add(UsageHourly(instance_id=instance_id, hour=usage.hour_of(now - age),
                                        samples=1, cpu_seconds=1, memory_mb_sum=1, memory_mb_peak=1,
                                        disk_mb_sum=1, disk_mb_peak=1, net_in_bytes=0,
                                        net_out_bytes=0))
        in_process.write(seed)
        pruned = in_process.write(usage.prune)
        assert pruned["samples"] >= 1 and pruned["hourly"] >= 1
    finally:
        in_process.dispose()
    raw = alice.instance_usage("p", resolution="raw", since=(now - dt.timedelta(days=3)).isoformat())
    assert len(raw) == 1
    hourly = alice.instance_usage("p", since=(now - dt.timedelta(days=500)).isoformat())
    assert len(hourly) == 1

"""The master over HTTP, with SQLite and with PostgreSQL: catalog, auth,
allocation, idempotence, pending placement, reports, long-polls."""

import concurrent.futures
import threading
import time

import pytest
import requests
from sqlalchemy import create_engine, text

from slapnode.errors import MasterError

from slapnode.client import Client

from .conftest import published, unique_name


def add_release(master, schema=None, title=None):
    title = title or unique_name("sr")
    url = f"http://releases.example/{title}/software.cfg"
    master.client().add_software(url, title, "1.50", "test release", schema)
    return url, title


def expect_error(status, fn, *args, **kwargs):
    with pytest.raises(MasterError) as info:
        fn(*args, **kwargs)
    assert info.value.status == status, info.value
    assert "\n" not in str(info.value)
    return str(info.value)


# -- serving ---------------------------------------------------------------------------

def test_openapi_document_is_served(master):
    doc = requests.get(master.url + "/api/v1/openapi.json", timeout=5).json()
    assert "/api/v1/instances" in doc["paths"]
    assert "/api/v1/node/desired-state" in doc["paths"]


def test_shipped_software_releases_are_served(master):
    answer = requests.get(master.url + "/software-releases/hello/software.cfg", timeout=5)
    assert answer.status_code == 200
    assert "[buildout]" in answer.text


def test_init_twice_keeps_data_and_token(master):
    import subprocess
    from .conftest import slapnode_cmd
    url, title = add_release(master)
    again = subprocess.run(slapnode_cmd("master", "init", "--data-dir", str(master.data_dir),
                                        *(["--db", master.db_url] if master.backend != "sqlite" else [])),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == master.admin_token
    assert master.client().show_software(title)["url"] == url
    assert (master.data_dir / "admin.token").stat().st_mode & 0o777 == 0o600


# -- auth ------------------------------------------------------------------------------

def test_requests_without_or_with_a_bad_token_are_refused(master):
    assert "no token" in expect_error(401, master.client(token="").list_software)
    assert "unknown token" in expect_error(401, master.client(token="snu_nope").list_software)


def test_only_admins_change_the_catalog_and_add_users(master):
    _, token = master.new_user()
    user = master.client(token)
    expect_error(403, user.add_software, "http://x.example/a.cfg", unique_name("t"))
    expect_error(403, user.add_user, unique_name("u"))


def test_a_user_enrolls_a_computer_of_their_own_and_not_someone_elses(master):
    _, token = master.new_user()
    user = master.client(token)
    name = unique_name("n")
    enrolled = master.client().enroll(user.create_enrollment_token(name)["token"])
    assert enrolled["computer"] == name
    mine = user.show_computer(name)
    assert mine["owner"] == user.me()["name"] and mine["scope"] == "personal"
    _, other_token = master.new_user()
    other = master.client(other_token)
    assert "belongs to someone else" in expect_error(403, other.create_enrollment_token, name)
    assert "neither yours nor open" in expect_error(403, other.show_computer, name)
    assert name not in [c["name"] for c in other.list_computers()]
    assert name in [c["name"] for c in master.client().list_computers()]     # admins see all
    assert "one of personal, friends, public, closed" in expect_error(
        400, user.set_scope, name, "everyone")


def test_tokens_are_stored_only_hashed(master):
    name, token = master.new_user()
    engine = create_engine(master.db_url)
    try:
        with engine.connect() as conn:
            rows = [r[0] for r in conn.execute(text("SELECT token_hash FROM tokens"))]
            creds = [r[0] for r in conn.execute(text("SELECT credential_hash FROM computers"))]
    finally:
        engine.dispose()
    assert token not in rows and len(rows) >= 2
    assert all(len(r) == 64 for r in rows)
    assert all(c is None or len(c) == 64 for c in creds)


def test_users_see_and_change_only_their_own_instances(master, make_node):
    url, title = add_release(master)
    make_node(partitions=2)
    _, token_a = master.new_user()
    _, token_b = master.new_user()
    a, b = master.client(token_a), master.client(token_b)
    a.request_instance(title="mine", software=title)
    assert [i["title"] for i in b.list_instances()] == []
    expect_error(404, b.show_instance, "mine")
    expect_error(404, b.change_instance, "mine", "destroyed")
    # the same title is free for another user
    assert b.request_instance(title="mine", software=title)["title"] == "mine"
    assert a.show_instance("mine")["status"] == "deploying"


def test_node_credential_sees_only_its_own_computer(master, make_node):
    url, title = add_release(master)
    node_a = make_node(partitions=1)
    node_b = make_node(partitions=1)
    _, token = master.new_user()
    master.client(token).request_instance(title="x", software=title,
                                          node={"computer": node_a.name})
    instance = node_a.instance_on("slappart0")
    assert node_b.instance_on("slappart0") is None
    # node B cannot report on node A's instance: it is not on B's computer
    node_b.report_instance("slappart0", instance["id"], "ready", {"url": "http://evil"})
    assert published(master.client(token).show_instance("x")) == {}
    # a node credential is not a user token, and the reverse
    expect_error(403, master.client(node_a.client.token).list_instances)
    expect_error(403, master.client(token).call, "GET", "/node/desired-state")


def test_enrollment_tokens_are_one_time(master):
    name = unique_name("node")
    token = master.client().create_enrollment_token(name, scope="public")["token"]
    anon = master.client(token="")
    assert anon.enroll(token)["computer"] == name
    assert "already used" in expect_error(401, anon.enroll, token)
    assert "unknown enrollment token" in expect_error(401, anon.enroll, "sne_nope")
    assert "not an enrollment token" in expect_error(401, anon.enroll, "snu_nope")


# -- catalog ---------------------------------------------------------------------------

def test_unknown_software_is_refused_and_no_partition_is_taken(master, make_node):
    node = make_node(partitions=1)
    _, token = master.new_user()
    message = expect_error(404, master.client(token).request_instance,
                           title="x", software="http://nowhere.example/nothing.cfg")
    assert "neither a catalog URL nor a catalog title" in message
    assert node.instance_on("slappart0") is None
    assert master.client(token).list_instances() == []


def test_catalog_refuses_duplicates_and_bad_urls(master):
    url, title = add_release(master)
    assert "already has" in expect_error(409, master.client().add_software, url, unique_name("t"))
    assert "already has" in expect_error(409, master.client().add_software,
                                         "http://other.example/x.cfg", title)
    expect_error(400, master.client().add_software, "not a url", unique_name("t"))
    expect_error(400, master.client().add_software, "http://x.example/a.cfg", unique_name("t"),
                 price="-3")


def test_software_can_be_named_by_url_or_title(master, make_node):
    url, title = add_release(master)
    make_node(partitions=2)
    _, token = master.new_user()
    user = master.client(token)
    assert user.request_instance(title="by-title", software=title)["software"] == url
    assert user.request_instance(title="by-url", software=url)["software"] == url


def test_parameters_are_checked_against_the_release_schema(master, make_node):
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"port": {"type": "integer", "maximum": 65535},
                             "name": {"type": "string"}}}
    url, title = add_release(master, schema=schema)
    node = make_node(partitions=1)
    _, token = master.new_user()
    user = master.client(token)
    message = expect_error(422, user.request_instance, title="x", software=title,
                           parameters={"port": "99999", "colour": "red"})
    assert "port" in message and "colour" in message
    assert user.list_instances() == []
    assert node.instance_on("slappart0") is None
    assert user.request_instance(title="x", software=title,
                                 parameters={"port": "8080"})["status"] == "deploying"


# -- allocation ------------------------------------------------------------------------

def test_request_places_on_a_free_partition_and_supplies_the_release(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=2)
    _, token = master.new_user()
    view = master.client(token).request_instance(title="i", software=title,
                                                 parameters={"name": "Ada"},
                                                 node={"computer": node.name})
    assert view["status"] == "deploying"
    assert (view["node"], view["partition"]) == (node.name, "slappart0")
    desired = node.desired()
    assert [(s["url"], s["state"], s["status"]) for s in desired["software"]] == \
        [(url, "available", "pending")]
    instance = node.instance_on("slappart0")
    assert instance["parameters"] == {"name": "Ada"} and instance["state"] == "started"
    assert master.client().show_software(title)["supplies"][0]["node"] == node.name


def test_request_is_idempotent_and_a_change_bumps_the_revision(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=1)
    _, token = master.new_user()
    user = master.client(token)
    first = user.request_instance(title="i", software=title, parameters={"a": "1"},
                                  node={"computer": node.name})
    revision = node.desired()["revision"]
    again = user.request_instance(title="i", software=title, parameters={"a": "1"},
                                  node={"computer": node.name})
    assert not again["changed"] and again["partition"] == first["partition"]
    assert node.desired()["revision"] == revision
    changed = user.request_instance(title="i", software=title, parameters={"a": "2"},
                                    node={"computer": node.name})
    assert changed["changed"] and changed["partition"] == first["partition"]
    assert node.desired()["revision"] > revision
    assert node.instance_on("slappart0")["parameters"] == {"a": "2"}
    assert len(user.list_instances()) == 1


def test_pending_instance_is_placed_when_a_partition_appears(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=0)
    _, token = master.new_user()
    user = master.client(token)
    view = user.request_instance(title="w", software=title, node={"computer": node.name})
    assert view["status"] == "pending" and view["partition"] is None
    node.report_partitions(1)
    view = user.show_instance("w")
    assert view["status"] == "deploying" and view["partition"] == "slappart0"


def test_node_filters_choose_the_computer(master, make_node):
    url, title = add_release(master)
    small = make_node(partitions=1, ram_mb=512, cpus=1)
    big = make_node(partitions=1, ram_mb=65536, cpus=64)
    _, token = master.new_user()
    user = master.client(token)
    view = user.request_instance(title="big", software=title,
                                 node={"min-ram-mb": "65536", "min-cpus": "64"})
    assert view["node"] == big.name
    view = user.request_instance(title="small", software=title, node={"computer": small.name})
    assert view["node"] == small.name
    assert "known keys" in expect_error(422, user.request_instance, title="z", software=title,
                                        node={"colour": "blue"})


def test_concurrent_requests_never_share_a_partition(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=6)
    _, token = master.new_user()

    def request(i):
        client = master.client(token)
        return client.request_instance(title=f"c{i}", software=title, node={"computer": node.name})

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        views = list(pool.map(request, range(20)))
    placed = [v["partition"] for v in views if v["partition"]]
    assert len(placed) == 6 and len(set(placed)) == 6
    assert sum(v["status"] == "pending" for v in views) == 14
    held = [p["instance"]["id"] for p in node.desired()["partitions"] if p["instance"]]
    assert len(held) == len(set(held)) == 6


def test_concurrent_identical_requests_make_one_instance(master, make_node):
    url, title = add_release(master)
    make_node(partitions=4)
    _, token = master.new_user()

    def request(_):
        return master.client(token).request_instance(title="same", software=title)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        views = list(pool.map(request, range(8)))
    assert len({v["partition"] for v in views}) == 1
    assert len(master.client(token).list_instances()) == 1


# -- the node's side -------------------------------------------------------------------

def test_report_makes_the_instance_ready_with_its_connection_parameters(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=1)
    _, token = master.new_user()
    user = master.client(token)
    user.request_instance(title="i", software=title, node={"computer": node.name})
    instance = node.instance_on("slappart0")
    node.client.report(software=[{"url": url, "status": "available", "log_tail": "done"}])
    node.report_instance("slappart0", instance["id"], "ready", {"url": "http://10.9.0.2:8080/"})
    view = user.show_instance("i")
    assert view["status"] == "ready"
    assert published(view) == {"url": "http://10.9.0.2:8080/"}
    assert view["connection"]["hostname"] == view["hostname"] == \
        f"i.{view['hostname'].split('.')[1]}.slapnode.internal"
    assert master.client().show_software(title)["supplies"][0]["status"] == "available"


def test_destroy_frees_the_partition_for_a_pending_instance(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=1)
    _, token = master.new_user()
    user = master.client(token)
    user.request_instance(title="first", software=title, node={"computer": node.name})
    assert user.request_instance(title="second", software=title,
                                 node={"computer": node.name})["status"] == "pending"
    first = node.instance_on("slappart0")
    view = user.change_instance("first", "destroyed")
    assert view["state"] == "destroyed" and view["status"] == "deploying"
    assert node.instance_on("slappart0")["state"] == "destroyed"
    node.report_instance("slappart0", first["id"], "destroyed")
    assert user.show_instance("first")["status"] == "destroyed"
    second = user.show_instance("second")
    assert second["status"] == "deploying" and second["partition"] == "slappart0"


def test_shrinking_refuses_to_remove_a_busy_partition(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=3)
    _, token = master.new_user()
    master.client(token).request_instance(title="busy", software=title,
                                          node={"computer": node.name})
    message = expect_error(409, node.report_partitions, 0)
    assert "slappart0" in message and "busy" in message
    assert len(node.desired()["partitions"]) == 3
    node.client.report_partitions([{"reference": "slappart0"}])     # drop the two free ones
    assert [p["reference"] for p in node.desired()["partitions"]] == ["slappart0"]


def test_stale_reports_about_a_reassigned_partition_are_ignored(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=1)
    _, token = master.new_user()
    user = master.client(token)
    user.request_instance(title="i", software=title, node={"computer": node.name})
    instance = node.instance_on("slappart0")
    node.report_instance("slappart0", instance["id"] + 10000, "error", reason="old news")
    assert user.show_instance("i")["status"] == "deploying"


def test_shared_instance_attaches_to_a_host_of_the_same_release(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=1)
    _, token = master.new_user()
    user = master.client(token)
    assert user.request_instance(title="s", software=title, shared=True,
                                 parameters={"path": "/a"})["status"] == "pending"
    user.request_instance(title="host", software=title, node={"computer": node.name})
    view = user.show_instance("s")
    assert view["host"] == "host" and view["node"] == node.name
    host = node.instance_on("slappart0")
    assert [s["title"] for s in host["shared_instances"]] == ["s"]
    node.client.report(shared=[{"instance_id": host["shared_instances"][0]["id"], "status": "ready",
                                "connection": {"url": "http://h/a"}}])
    assert user.show_instance("s")["connection"] == {"url": "http://h/a"}


# -- long-polls ------------------------------------------------------------------------

def test_unchanged_poll_answers_at_once_without_wait(master, make_node):
    node = make_node(partitions=1)
    revision = node.desired()["revision"]
    answer = node.client.desired_state(after=revision)
    assert answer == {"revision": revision, "changed": False}


def parked_long_polls(master):
    return requests.get(f"{master.url}/api/v1/health", timeout=5).json()["parked_long_polls"]


def wait_until(check, seconds=10):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_long_poll_wakes_up_on_a_change(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=1)
    revision = node.desired()["revision"]
    _, token = master.new_user()
    result = {}

    def poll():
        started = time.monotonic()
        result["doc"] = node.client.desired_state(after=revision, wait=20)
        result["took"] = time.monotonic() - started

    waiter = threading.Thread(target=poll)
    parked = parked_long_polls(master)
    waiter.start()
    wait_until(lambda: parked_long_polls(master) > parked)     # the poll is parked ...
    changed_at = time.monotonic()                                # ... before the change
    master.client(token).request_instance(title="x", software=title, node={"computer": node.name})
    waiter.join(25)
    assert result["doc"]["changed"] and result["doc"]["revision"] > revision
    assert result["took"] < 5 and time.monotonic() - changed_at < 5


def test_long_poll_gives_up_after_its_wait(master, make_node):
    node = make_node(partitions=1)
    revision = node.desired()["revision"]
    started = time.monotonic()
    answer = node.client.desired_state(after=revision, wait=0.5)
    assert answer["changed"] is False
    assert 0.4 < time.monotonic() - started < 5


def test_a_parked_poll_whose_node_went_away_is_released(master, make_node):
    """An unchanged poll parks before the framework (master/longpoll.py); a node that
    hangs up leaves no waiter behind."""
    import socket
    import urllib.parse

    node = make_node(partitions=1)
    revision = node.desired()["revision"]
    parked = parked_long_polls(master)
    where = urllib.parse.urlsplit(master.url)
    with socket.create_connection((where.hostname, where.port), timeout=5) as sock:
        sock.sendall(f"GET /api/v1/node/desired-state?after={revision}&wait=60 HTTP/1.1\r\n"
                     f"Host: {where.hostname}\r\nAuthorization: Bearer {node.client.token}\r\n"
                     "\r\n".encode())
        wait_until(lambda: parked_long_polls(master) == parked + 1)
    wait_until(lambda: parked_long_polls(master) == parked)


def test_only_plain_unchanged_polls_park_before_the_framework():
    from slapnode.master.longpoll import parked_query

    assert parked_query(b"after=5&wait=30") == (5, 30.0)
    assert parked_query(b"after=5") == parked_query(b"after=5&wait=0") == (5, 0.0)
    for query in (b"", b"wait=30", b"after=-1&wait=30", b"after=5&wait=-1", b"after=5&wait=500",
                  b"after=x&wait=1", b"after=5&wait=nan", b"after=5&wait=1&x=1",
                  b"after=5&wait=inf", b"after&wait=1"):
        assert parked_query(query) is None, query


def test_instance_show_waits_until_ready(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=1)
    _, token = master.new_user()
    user = master.client(token)
    user.request_instance(title="w", software=title, node={"computer": node.name})
    instance = node.instance_on("slappart0")
    parked = parked_long_polls(master)

    def report_once_parked():
        wait_until(lambda: parked_long_polls(master) > parked)  # the show is parked first
        node.report_instance("slappart0", instance["id"], "ready", {"k": "v"})
    reporter = threading.Thread(target=report_once_parked)
    reporter.start()
    started = time.monotonic()
    view = user.show_instance("w", wait=20)
    reporter.join()
    assert view["status"] == "ready" and published(view) == {"k": "v"}
    assert time.monotonic() - started < 5


# -- bad bodies ------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"title": "x", "software": "s", "state": "exploded"},
    {"title": "x", "software": "s", "unknown": 1},
    {"title": "", "software": "s"},
    {"title": "x", "software": "s", "parameters": ["not", "an", "object"]},
])
def test_bad_request_bodies_get_a_4xx_with_one_line(master, body):
    _, token = master.new_user()
    answer = requests.post(master.url + "/api/v1/instances", json=body, timeout=5,
                           headers={"Authorization": f"Bearer {token}"})
    assert 400 <= answer.status_code < 500
    assert "\n" not in answer.json()["detail"]


def test_malformed_json_body_is_a_4xx(master):
    answer = requests.post(master.url + "/api/v1/instances", data=b"{not json", timeout=5,
                           headers={"Authorization": f"Bearer {master.admin_token}",
                                    "Content-Type": "application/json"})
    assert answer.status_code == 422


def test_a_refused_change_leaves_the_instance_as_it_was(master, make_node):
    schema = {"type": "object", "properties": {"port": {"type": "integer"}}}
    url, title = add_release(master, schema=schema)
    node = make_node(partitions=1)
    _, token = master.new_user()
    user = master.client(token)
    user.request_instance(title="i", software=title, parameters={"port": "80"},
                          node={"computer": node.name})
    revision = node.desired()["revision"]
    expect_error(422, user.request_instance, title="i", software=title,
                 parameters={"port": "eighty"}, node={"computer": node.name})
    expect_error(404, user.request_instance, title="i", software="no-such-release")
    expect_error(422, user.request_instance, title="i", software=title, node={"bogus": "1"})
    view = user.show_instance("i")
    assert view["parameters"] == {"port": "80"} and view["software"] == url
    assert node.desired()["revision"] == revision


def test_a_master_stopping_answers_its_parked_long_polls_instead_of_failing_them(tmp_path):
    """Regression: a parked long-poll was cancelled by the graceful shutdown and
    answered 500 with a traceback in the master's log."""
    from .conftest import start_master, stop_process

    proc, url, admin = start_master(tmp_path / "m")
    try:
        client = Client(url, admin, retries=0)
        token = client.create_enrollment_token("stopping", scope="public")["token"]
        node = Client(url, Client(url, retries=0).enroll(token)["credential"], retries=0)
        revision = node.desired_state()["revision"]
        result = {}

        def poll():
            try:
                result["answer"] = node.desired_state(after=revision, wait=60)
            except Exception as exc:            # a connection closed is fine, a 500 is not
                result["error"] = exc

        waiter = threading.Thread(target=poll)
        waiter.start()
        time.sleep(0.5)
        started = time.monotonic()
        proc.terminate()
        proc.wait(30)
        waiter.join(30)
        assert time.monotonic() - started < 5
        assert result.get("answer", {}).get("changed") is False, result
        assert "Traceback" not in (tmp_path / "m" / "serve.log").read_text()
    finally:
        stop_process(proc)


def test_destroying_a_host_returns_its_shared_instances_to_pending(master, make_node):
    url, title = add_release(master)
    node = make_node(partitions=1)
    _, token = master.new_user()
    user = master.client(token)
    on = {"computer": node.name}
    user.request_instance(title="host", software=title, node=on)
    user.request_instance(title="guest", software=title, node=on, shared=True)
    host = node.instance_on("slappart0")
    assert [s["title"] for s in host["shared_instances"]] == ["guest"]
    user.change_instance("host", "destroyed")
    node.report_instance("slappart0", host["id"], "destroyed")      # the node wiped it
    assert user.show_instance("host")["status"] == "destroyed"
    guest = user.show_instance("guest")
    assert guest["status"] == "pending" and guest["connection"] == {}
    # a new host takes it at once
    user.request_instance(title="host2", software=title, node=on)
    assert [s["title"] for s in node.instance_on("slappart0")["shared_instances"]] == ["guest"]

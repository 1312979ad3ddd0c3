"""Attacks on the master through what it is sent: numbers JSON does not have, huge
bodies, integers beyond the database's, schemas that reach out or stall, titles
that drive terminals. One user's bad data must never break another's view or a
node's desired state. Run on SQLite and PostgreSQL."""

import http.server
import json
import threading
import time

import pytest
import requests
from sqlalchemy import create_engine, text

from ..conftest import published, unique_name
from .conftest import on


def api(master, token=None):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token or master.admin_token}"
    return session, f"{master.url}/api/v1"


def raw_post(session, url, body):
    return session.post(url, data=body, headers={"Content-Type": "application/json"})


@pytest.fixture
def schemaless(master):
    """A release without a schema, and a user with a token."""
    url = f"http://example.invalid/{unique_name('sr')}.cfg"
    master.client().add_software(url, unique_name("plain"))
    _, token = master.new_user()
    return url, token


def test_non_finite_numbers_are_refused_in_every_body(master, schemaless, make_node):
    url, token = schemaless
    session, base = api(master, token)
    for body in ('{"title": "t", "software": "%s", "parameters": {"x": NaN}}' % url,
                 '{"title": "t", "software": "%s", "parameters": {"x": [1, Infinity]}}' % url,
                 '{"title": "t", "software": "%s", "parameters": {"x": -Infinity}}' % url):
        answer = raw_post(session, f"{base}/instances", body)
        assert answer.status_code == 422 and "not a JSON number" in answer.json()["detail"]
    node = make_node(partitions=1)
    session.post(f"{base}/instances", json={"title": "t", "software": url, "node": on(node)})
    instance = node.desired()["partitions"][0]["instance"]
    node_session, _ = api(master, node.client.token)
    for usage in ('{"cpu_seconds": NaN}', '{"cpu_seconds": "NaN"}', '{"memory_mb": "Infinity"}'):
        body = ('{"instances": [{"partition": "slappart0", "instance_id": %d, "usage": %s}]}'
                % (instance["id"], usage))
        assert raw_post(node_session, f"{base}/node/report", body).status_code == 422, usage
    body = ('{"instances": [{"partition": "slappart0", "instance_id": %d, '
            '"connection": {"x": NaN}}]}' % instance["id"])
    assert raw_post(node_session, f"{base}/node/report", body).status_code == 422
    assert session.get(f"{base}/instances").status_code == 200


def _store(master, sql, **values):
    engine = create_engine(master.db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(sql), values)
    finally:
        engine.dispose()


def test_stored_bad_data_never_breaks_a_node_or_another_view(master, schemaless, make_node):
    """Rows written before the rules (NaN in parameters, usage, connection) are
    served as text: the node's desired state, the owner's list and the host owner's
    view all answer 200."""
    url, token = schemaless
    _, other = master.new_user()
    node = make_node(partitions=1)
    master.client(token).request_instance(title="host", software=url, node=on(node), share_with=["*"])
    master.client(other).request_instance(title="guest", software=url, node=on(node), shared=True)
    doc = node.desired()
    host = doc["partitions"][0]["instance"]
    guest_id = host["shared_instances"][0]["id"]
    for column in ("parameters", "usage", "connection"):
        if master.backend == "sqlite":      # SQLite keeps what it is given, NaN included
            _store(master, f"UPDATE instances SET {column} = :v WHERE id IN (:a, :b)",
                   v='{"x": NaN, "y": Infinity}', a=host["id"], b=guest_id)
        else:                               # PostgreSQL's JSON has no NaN: the worst it holds
            _store(master, f"UPDATE instances SET {column} = CAST(:v AS JSON) "
                   "WHERE id IN (:a, :b)", v='{"x": "NaN", "y": 1e308}', a=host["id"], b=guest_id)
    answer = node.client.call("GET", "/node/desired-state")
    assert answer["partitions"][0]["instance"]["title"] == "host"
    for who in (token, other):
        listed = requests.get(f"{master.url}/api/v1/instances",
                              headers={"Authorization": f"Bearer {who}"})
        assert listed.status_code == 200 and len(listed.json()) == 1


def test_oversized_bodies_and_parameters_are_refused(master, schemaless, make_node):
    url, token = schemaless
    session, base = api(master, token)
    big = session.post(f"{base}/instances", json={"title": "t", "software": url,
                                                  "parameters": {"x": "a" * (20 << 20)}})
    assert big.status_code == 413
    over = session.post(f"{base}/instances", json={"title": "t", "software": url,
                                                   "parameters": {"x": "a" * (300 << 10)}})
    assert over.status_code == 413 and "262144" in over.json()["detail"]
    assert session.get(f"{base}/instances").json() == []        # nothing was stored
    node = make_node(partitions=1)
    node_session, _ = api(master, node.client.token)
    huge_report = {"software": [{"url": "x", "status": "error", "log_tail": "a" * (9 << 20)}]}
    assert node_session.post(f"{base}/node/report", json=huge_report).status_code == 413
    session.post(f"{base}/instances", json={"title": "t", "software": url, "node": on(node)})
    instance = node.desired()["partitions"][0]["instance"]
    node.client.report(instances=[{"partition": "slappart0", "instance_id": instance["id"],
                                   "status": "ready", "connection": {"x": "a" * (300 << 10)}}])
    view = master.client(token).show_instance("t")
    assert view["status"] == "error" and published(view) == {}
    assert "KiB of connection parameters" in view["reason"]


def test_integers_beyond_the_database_are_refused(master, schemaless, make_node):
    url, token = schemaless
    session, base = api(master, token)
    for value in ("9223372036854775808", "2147483648", "-1", "1" * 5000):
        answer = session.post(f"{base}/instances", json={"title": "t", "software": url,
                                                         "node": {"min-ram-mb": value}})
        assert answer.status_code == 422, (value, answer.text)
    node = make_node(partitions=1)
    node_session, _ = api(master, node.client.token)
    assert node_session.put(f"{base}/node/capacity", json={"ram_mb": 1 << 40}).status_code == 422
    report = {"instances": [{"partition": "slappart0", "instance_id": 1 << 40, "status": "ready"}]}
    assert node_session.post(f"{base}/node/report", json=report).status_code == 422


class _Counting(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        body = b'{"type": "string"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_schema_never_makes_the_master_fetch_anything(master):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    remote = f"http://127.0.0.1:{server.server_port}/schema.json"
    try:
        session, base = api(master)
        refused = session.post(f"{base}/software", json={
            "url": f"http://x/{unique_name('r')}.cfg", "title": unique_name("r"),
            "schema": {"type": "object", "properties": {"a": {"$ref": remote}}}})
        assert refused.status_code == 400 and "never fetches" in refused.json()["detail"]
        # a schema stored before this rule: requests are refused, nothing is fetched
        url = f"http://x/{unique_name('r')}.cfg"
        master.client().add_software(url, unique_name("old"), schema={"type": "object"})
        schema = json.dumps({"type": "object", "properties": {"a": {"$ref": remote}}})
        _store(master, "UPDATE software_releases SET parameter_schema = :s WHERE url = :u"
               if master.backend == "sqlite" else
               "UPDATE software_releases SET parameter_schema = CAST(:s AS JSON) WHERE url = :u",
               s=schema, u=url)
        _, token = master.new_user()
        answer = requests.post(f"{base}/instances", headers={"Authorization": f"Bearer {token}"},
                               json={"title": "t", "software": url, "parameters": {"a": "x"}})
        assert answer.status_code == 422 and "does not fetch" in answer.json()["detail"]
        assert _Counting.hits == 0
    finally:
        server.shutdown()
        server.server_close()


def test_a_catastrophic_pattern_does_not_stall_the_master(master):
    url = f"http://x/{unique_name('r')}.cfg"
    master.client().add_software(url, unique_name("slow"), schema={
        "type": "object", "properties": {"a": {"type": "string", "pattern": "^(a|aa)+$"}}})
    _, token = master.new_user()
    session, base = api(master, token)
    done = {}

    def slow():
        started = time.monotonic()
        done["answer"] = session.post(f"{base}/instances", json={
            "title": "slow", "software": url, "parameters": {"a": "a" * 5000 + "b"}})
        done["seconds"] = time.monotonic() - started
    thread = threading.Thread(target=slow)
    thread.start()
    started = time.monotonic()
    other = requests.get(f"{base}/instances", headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == 200 and time.monotonic() - started < 1.5
    thread.join(30)
    assert done["answer"].status_code == 422 and "too long" in done["answer"].json()["detail"]
    assert done["seconds"] < 3
    refused = api(master)[0].post(f"{base}/software", json={
        "url": f"http://x/{unique_name('r')}.cfg", "title": unique_name("r"),
        "schema": {"type": "object", "properties": {"a": {"pattern": "(unclosed"}}}})
    assert refused.status_code == 400 and ("does not compile" in refused.json()["detail"]
                                           or "regex" in refused.json()["detail"])


@pytest.mark.parametrize("title", ["a\u009bb", "a\u202eb", "a\x1b[31mb", "a\u200bb", "a\x00b",
                                   "a\u2028b", " padded"])
def test_titles_refuse_control_and_bidi_characters(master, schemaless, title):
    url, token = schemaless
    session, base = api(master, token)
    answer = session.post(f"{base}/instances", json={"title": title, "software": url})
    assert answer.status_code == 400, title
    assert session.get(f"{base}/instances").json() == []
    if title.strip() != title:
        return
    refused = api(master)[0].post(f"{base}/software", json={
        "url": f"http://x/{unique_name('r')}.cfg", "title": "ok" + title})
    assert refused.status_code == 400

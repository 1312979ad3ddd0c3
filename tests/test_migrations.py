"""A database made by the first release of the master, with rows in every table,
upgrades through every migration and keeps its rows; the master then serves them.
On SQLite and PostgreSQL."""

import secrets
import tempfile
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from slapnode.master import db as dbmod
from slapnode.master.auth import hash_token

from .conftest import PG_URL, REQUIRE_PG, _pg_admin

ROWS = """
INSERT INTO users (id, name, is_admin, created_at) VALUES (1, 'old-admin', :t, :now), (2, 'ada', :f, :now);
INSERT INTO tokens (id, user_id, token_hash, created_at) VALUES (1, 2, :token_hash, :now);
INSERT INTO software_releases (id, url, title, description, price_cents, parameter_schema, created_at)
  VALUES (1, 'http://old.example/hello.cfg', 'hello', 'old', 150, '{"type": "object"}', :now);
INSERT INTO computers (id, name, owner_id, credential_hash, revision, cpus, ram_mb, disk_gb, arch,
  distribution, trusted_builder, enrolled_at, last_seen, created_at)
  VALUES (1, 'volunteer-1', 1, :node_hash, 7, 2, 2048, 20, 'x86_64', 'debian-12', :f, :now, :now, :now);
INSERT INTO enrollment_tokens (id, token_hash, computer_name, created_by, created_at, expires_at, used_at)
  VALUES (1, :enroll_hash, 'volunteer-1', 1, :now, :now, :now);
INSERT INTO instances (id, owner_id, title, sr_url, software_type, parameters, shared, node_filter,
  requested_state, host_instance_id, connection, status, status_reason, promises, created_at, updated_at)
  VALUES (1, 2, 'my-hello', 'http://old.example/hello.cfg', 'default', '{"name": "Ada"}', :f, '{}',
  'started', NULL, '{"url": "http://10.0.0.2:8080/"}', 'ready', '', '[]', :now, :now),
  (2, 2, 'guest', 'http://old.example/hello.cfg', 'default', '{}', :t, '{}',
  'started', 1, '{}', 'ready', '', '[]', :now, :now);
INSERT INTO partitions (id, computer_id, reference, unix_user, ipv4, ipv6, tap, instance_id)
  VALUES (1, 1, 'slappart0', 'slapuser0', '10.0.0.2', 'fd00::2', '', 1),
         (2, 1, 'slappart1', 'slapuser1', '10.0.0.3', 'fd00::3', '', NULL);
INSERT INTO supplies (id, computer_id, url, requested, status, log_tail, updated_at)
  VALUES (1, 1, 'http://old.example/hello.cfg', 'available', 'available', 'ok', :now);
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request):
    if request.param == "sqlite":
        path = Path(tempfile.mkdtemp(prefix="slapnode-migrate-")) / "old.db"
        yield f"sqlite:///{path}"
        path.unlink(missing_ok=True)
        path.parent.rmdir()
        return
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("SLAPNODE_TEST_PG_URL is not set but SLAPNODE_REQUIRE_PG=1")
        pytest.skip("no PostgreSQL (set SLAPNODE_TEST_PG_URL; `bash install.sh test` does)")
    name = f"slapnode_migrate_{secrets.token_hex(4)}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _upgrade(url, revision):
    database = dbmod.Database(url)
    try:
        dbmod.migrate(database, revision)
    finally:
        database.dispose()


def test_a_populated_first_database_upgrades_through_every_migration(empty_database):
    url = empty_database
    _upgrade(url, "0001")
    user_token = "snu_" + secrets.token_urlsafe(32)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            values = {"now": "2026-01-01 00:00:00+00:00", "t": True, "f": False,
                      "token_hash": hash_token(user_token), "node_hash": "b" * 64,
                      "enroll_hash": "c" * 64}
            for statement in ROWS.split(";"):
                if statement.strip():
                    connection.execute(text(statement), values)
    finally:
        engine.dispose()
    _upgrade(url, "head")                            # 0002, 0003, 0004 and whatever follows

    from slapnode.master.core import Master
    from slapnode.master import computers, instances, users

    master = Master(url)
    try:
        with master.read() as session:
            ada = users.authenticate_user(session, user_token)
            listed = [instances.view(session, i) for i in instances.list_for(session, ada)]
            assert [v["title"] for v in listed] == ["my-hello", "guest"]
            hello = listed[0]
            assert hello["parameters"] == {"name": "Ada"} and hello["partition"] == "slappart0"
            assert hello["connection"] == {"url": "http://10.0.0.2:8080/"}
            assert hello["usage"] == {} and hello["share_with"] == []      # new columns defaulted
            assert listed[1]["host"] == "my-hello"                          # her own host
            from slapnode.master.models import Computer
            computer = session.get(Computer, 1)
            doc = computers.desired_state(session, computer)
            assert doc["revision"] == 7
            assert doc["partitions"][0]["instance"]["shared_instances"][0]["title"] == "guest"
            assert doc["software"] == [{"url": "http://old.example/hello.cfg", "state": "available",
                                        "status": "available"}]
            # 0006: tokens got names; computers that took anyone's instances still do
            assert users.list_tokens(session, ada.id)[0]["name"] == "token-1"
            assert computers.list_for(session, ada)[0]["scope"] == "public"
            assert computers.list_for(session, ada)[0]["owner"] == "old-admin"
            # 0009: the old release is the title's only version
            from slapnode.master import catalog
            assert catalog.require(session, "hello").version == ""
            # 0008: instances alive at the upgrade are billed from their creation
            from slapnode.master import invoices
            draft = invoices.draft(session, ada, "2026-01")
            assert [line["title"] for line in draft["lines"]] == ["my-hello", "guest"]
            assert draft["currency"] == "EUR" and draft["lines"][0]["unit_price"] == "1.50"

        def request(session):
            instance, _ = instances.request(session, ada, "after-upgrade", "hello")
            return instances.view(session, instance)
        placed = master.write(request)
        assert (placed["node"], placed["partition"]) == ("volunteer-1", "slappart1")
    finally:
        master.dispose()

"""``master backup`` and ``master restore``: a backup taken while the master serves,
restored into a new data directory (and a new PostgreSQL database), serves the same
catalog, instances, tokens and invoices under the same CA, and the node goes on against
it with its credential and pinned CA. SQLite and PostgreSQL."""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from slapnode.client import Client

from .conftest import fresh_pg_database, require_pg, slapnode_cmd, start_master, stop_process


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request):
    """(source URL, target URL) of two fresh databases (None, None: SQLite in the data dirs)."""
    if request.param == "sqlite":
        yield None, None
        return
    require_pg()
    with fresh_pg_database("slapnode_backup") as source, \
            fresh_pg_database("slapnode_restored") as target:
        yield source, target


def _cli(*args):
    return subprocess.run(slapnode_cmd("master", *map(str, args)), capture_output=True, text=True,
                          timeout=180)


def test_a_restored_master_serves_the_same_and_its_node_goes_on(databases):
    source_db, target_db = databases
    base = Path(tempfile.mkdtemp(prefix="slapnode-backup-"))
    proc = None
    try:
        proc, url, admin_token, fingerprint = start_master(base / "a", source_db, tls=True,
                                                           names=["127.0.0.1"])
        ca = base / "ca.pem"
        shutil.copy(base / "a" / "tls" / "ca.pem", ca)
        admin = Client(url, admin_token, ca_file=ca, retries=0)
        user_token = admin.add_user("ada")["token"]
        software = f"{url}/software-releases/hello/software.cfg"
        admin.add_software(software, "hello", price="1.00")
        enrollment = admin.create_enrollment_token("node-a", scope="public")["token"]
        credential = Client(url, ca_file=ca, retries=0).enroll(enrollment)["credential"]
        node = Client(url, credential, ca_file=ca, retries=0)
        node.report_partitions([{"reference": "slappart0", "ipv4": "10.9.0.2", "ipv6": "fd00::2"}])
        ada = Client(url, user_token, ca_file=ca, retries=0)
        ada.request_instance(title="web", software=software, parameters={"name": "Ada"})
        [item] = node.desired_state()["partitions"]
        node.report(instances=[{"partition": "slappart0", "instance_id": item["instance"]["id"],
                                "status": "ready", "connection": {"url": "http://web/"}}])
        before = {"software": admin.list_software(), "instance": ada.show_instance("web"),
                  "invoices": ada.list_invoices(), "users": admin.list_users()}

        file = base / "master.backup"
        taken = _cli("backup", file, "--data-dir", base / "a")     # while it serves
        assert taken.returncode == 0, taken.stderr
        assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
        port = int(url.rsplit(":", 1)[1])
        stop_process(proc)
        proc = None

        put = _cli("restore", file, "--data-dir", base / "b", *(["--db", target_db] if target_db else []))
        assert put.returncode == 0, put.stderr
        proc, url_b, _token, fingerprint_b = start_master(base / "b", port=port, tls=True)
        assert url_b == url and fingerprint_b == fingerprint       # the same CA
        ada = Client(url, user_token, ca_file=ca, retries=0)
        admin = Client(url, admin_token, ca_file=ca, retries=0)
        assert ada.me()["name"] == "ada"                            # the same tokens
        after = {"software": admin.list_software(), "instance": ada.show_instance("web"),
                 "invoices": ada.list_invoices(), "users": admin.list_users()}
        assert after == before
        [again] = node.desired_state()["partitions"]               # the node goes on
        assert again["instance"]["id"] == item["instance"]["id"]
        node.report(instances=[{"partition": "slappart0", "instance_id": item["instance"]["id"],
                                "status": "ready", "connection": {"url": "http://web/2"}}])
        assert ada.show_instance("web")["connection"]["url"] == "http://web/2"

        # a master is never overwritten by mistake, and a stray file is not a backup
        twice = _cli("restore", file, "--data-dir", base / "b", *(["--db", target_db] if target_db else []))
        assert twice.returncode == 2 and "--force" in twice.stderr and "Traceback" not in twice.stderr
        (base / "junk").write_text("not a backup")
        junk = _cli("restore", base / "junk", "--data-dir", base / "c")
        assert junk.returncode == 2 and "not a slapnode backup" in junk.stderr
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(base, ignore_errors=True)

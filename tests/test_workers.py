"""A master of several workers on PostgreSQL (``master serve --workers 2``): a change
committed through one worker wakes a long-poll parked on the other at once
(LISTEN/NOTIFY), a token revoked through one is refused by the other at once, and
SQLite refuses more than one worker with a line that says why."""

import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from slapnode.client import Client
from slapnode.errors import MasterError

from .conftest import slapnode_cmd, start_master, stop_group, unique_name


@pytest.fixture(scope="module")
def workers(pg_database):
    base = Path(tempfile.mkdtemp(prefix="slapnode-workers-"))
    proc = None
    try:
        proc, url, token = start_master(base / "master", pg_database,
                                        serve_args=("--workers", "2"), new_session=True)
        yield url, token
    finally:
        if proc is not None:
            stop_group(proc)
        shutil.rmtree(base, ignore_errors=True)


def _worker(client):
    return client.call("GET", "/health")["worker"]


def _on_worker(url, token, wanted=None, differ=None):
    """A client whose keep-alive connection a given worker serves (``wanted``), or any
    worker but ``differ``."""
    deadline = time.monotonic() + 30        # (a worker may still be starting)
    while time.monotonic() < deadline:
        client = Client(url, token, retries=0)
        worker = _worker(client)
        if (wanted is None or worker == wanted) and (differ is None or worker != differ):
            return client, worker
        time.sleep(0.05)
    pytest.fail("in 30 s, no connection reached the other worker")


def test_a_change_through_one_worker_wakes_a_long_poll_on_the_other(workers):
    url, admin = workers
    one, first = _on_worker(url, admin)
    other, _ = _on_worker(url, admin, differ=first)
    name = unique_name("node")
    enrollment = one.create_enrollment_token(name, scope="public")["token"]
    credential = Client(url, retries=0).enroll(enrollment)["credential"]
    node, _ = _on_worker(url, credential, wanted=first)
    revision = node.desired_state()["revision"]
    woken = {}

    def poll():
        answer = node.desired_state(after=revision, wait=20)
        woken.update(at=time.monotonic(), answer=answer)
    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)                     # parked on the first worker
    software = f"http://example.test/{name}.cfg"
    other.add_software(software, name)
    other.supply(software, name)        # committed by the other worker
    committed = time.monotonic()
    thread.join(25)
    assert woken["answer"]["changed"] and woken["answer"]["revision"] > revision
    assert woken["at"] - committed < 0.5, f"woken {woken['at'] - committed:.3f} s after"


def test_a_token_revoked_through_one_worker_is_refused_by_the_other(workers):
    url, admin = workers
    one, first = _on_worker(url, admin)
    made = one.create_token(unique_name("t"))
    user_one, _ = _on_worker(url, made["token"], wanted=first)
    user_other, _ = _on_worker(url, made["token"], differ=first)
    assert user_one.me()["name"] == user_other.me()["name"] == "admin"   # cached by both
    one.revoke_token(made["name"])
    time.sleep(0.2)
    with pytest.raises(MasterError) as refused:
        user_other.me()
    assert refused.value.status == 401


def test_sqlite_refuses_more_than_one_worker(tmp_path):
    init = subprocess.run(slapnode_cmd("master", "init", "--data-dir", tmp_path / "m"),
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    serve = subprocess.run(slapnode_cmd("master", "serve", "--data-dir", tmp_path / "m",
                                        "--workers", "2", "--insecure-http"),
                           capture_output=True, text=True, timeout=60)
    assert serve.returncode != 0 and "Traceback" not in serve.stderr
    assert "PostgreSQL" in serve.stderr and len(serve.stderr.strip().splitlines()) == 1

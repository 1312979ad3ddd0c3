"""Mail from partitions, the master's half: a node passes a message on, the master sends
it through its smarthost (a real SMTP server run here: STARTTLS, a password), from the
instance's own address, with the header naming it, counted in the audit trail.
Against SQLite and PostgreSQL. The node's relay in a real partition is tested in
test_network_system.py."""

import json
import os
import subprocess
import sys
import tempfile
import shutil
import time
from pathlib import Path

import pytest

from slapnode.errors import MasterError

from .conftest import free_port, slapnode_cmd, stop_process, unique_name

HERE = Path(__file__).resolve().parent


def _init(master, *args, env=None):
    return subprocess.run(slapnode_cmd("master", "init", "--data-dir", str(master.data_dir), *args),
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def smarthost(master):
    """A catcher on loopback with STARTTLS (its certificate from a CA of the test's) and
    a password; the master set to send through it, and set back after."""
    from master import tls

    base = Path(tempfile.mkdtemp(prefix="slapnode-mail-"))
    proc = None
    try:
        tls.ensure(base, ["127.0.0.1"], title="test smarthost")
        files = tls.paths(base)
        port, log = free_port(), base / "caught.jsonl"
        proc = subprocess.Popen([sys.executable, str(HERE / "mailcatcher.py"), "127.0.0.1",
                                 str(port), str(log), str(files["cert"]), str(files["key"]),
                                 "grid", "s3cret pass"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        done = _init(master, "--smtp-relay", f"127.0.0.1:{port}", "--smtp-user", "grid",
                     "--smtp-ca-file", str(files["ca"]),
                     env={"SLAPNODE_SMTP_PASSWORD": "s3cret pass"})
        assert done.returncode == 0, done.stderr
        assert f"through 127.0.0.1:{port} (STARTTLS, as grid)" in done.stderr
        assert "s3cret" not in done.stderr + done.stdout
        yield log
    finally:
        _init(master, "--smtp-relay", "none")
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(base, ignore_errors=True)


def _caught(log, count, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"the catcher has {len(lines)} message(s), not {count}")


def _placed(master, make_node, software):
    node = make_node(partitions=1)
    title = unique_name("mailer")
    master.client().request_instance(title=title, software=software, parameters={},
                                     node={"computer": node.name})
    return node, title, node.instance_on("slappart0")


def test_a_node_passes_on_its_instances_mail_from_their_own_address(master, make_node,
                                                                   catalog_hello, smarthost):
    node, title, instance = _placed(master, make_node, catalog_hello)
    sender = instance["mail_from"]
    assert sender.endswith("@slapnode.internal") and sender.split("@")[0] in instance["hostname"]
    message = (b"Subject: results\r\nX-Slapnode-Instance: someone-else.example\r\n"
               b"\r\nwork unit 42 done\r\n")
    answer = node.client.send_mail("slappart0", instance["id"], sender,
                                   ["ada@example.org", "bob@example.org"], message)
    assert answer == {"sender": sender, "recipients": 2}
    [caught] = _caught(smarthost, 1)
    assert caught["mail_from"] == sender
    assert caught["rcpt_tos"] == ["ada@example.org", "bob@example.org"]
    assert caught["tls"] and caught["user"] == "grid"
    header = f"X-Slapnode-Instance: {instance['hostname']} (instance {instance['id']} on {node.name})"
    assert caught["data"].startswith(header) and "someone-else" not in caught["data"]
    assert "work unit 42 done" in caught["data"]
    node.client.send_mail("slappart0", instance["id"], sender, ["ada@example.org"], message)
    _caught(smarthost, 2)
    # the audit trail counts, per hour: one row, two messages, three recipients; no content
    sent = [e for e in master.client().instance_history(title) if e["action"] == "mail sent"]
    assert len(sent) == 1 and sent[0]["actor"] == f"node:{node.name}"
    assert sent[0]["detail"]["messages"] == 2 and sent[0]["detail"]["recipients"] == 3
    assert "work unit" not in json.dumps(sent)


def test_a_node_sends_only_for_its_own_instances_and_their_own_address(master, make_node,
                                                                      catalog_hello, smarthost):
    node, _title, instance = _placed(master, make_node, catalog_hello)
    other = make_node(partitions=1)
    with pytest.raises(MasterError) as refused:
        other.client.send_mail("slappart0", instance["id"], instance["mail_from"],
                               ["ada@example.org"], b"Subject: x\r\n\r\nx\r\n")
    assert refused.value.status == 404
    with pytest.raises(MasterError) as forged:
        node.client.send_mail("slappart0", instance["id"], "ceo@bank.example",
                              ["ada@example.org"], b"Subject: x\r\n\r\nx\r\n")
    assert forged.value.status == 400 and instance["mail_from"] in str(forged.value)
    with pytest.raises(MasterError) as bad:
        node.client.send_mail("slappart0", instance["id"], instance["mail_from"],
                              ["not an address"], b"Subject: x\r\n\r\nx\r\n")
    assert bad.value.status == 400 and "not an address" in str(bad.value)
    assert not smarthost.exists()


def test_without_a_smarthost_the_master_says_how_to_set_one(master, make_node, catalog_hello):
    node, _title, instance = _placed(master, make_node, catalog_hello)
    with pytest.raises(MasterError) as refused:
        node.client.send_mail("slappart0", instance["id"], instance["mail_from"],
                              ["ada@example.org"], b"Subject: x\r\n\r\nx\r\n")
    assert refused.value.status == 503 and "--smtp-relay HOST:PORT" in str(refused.value)


def test_init_refuses_bad_mail_options_and_keeps_what_was_saved(master):
    before = (master.data_dir / "master.cfg").read_text()
    for args in (["--smtp-relay", "smtp.example.org"], ["--mail-domain", "not a domain"],
                 ["--smtp-relay", "smtp.example.org:99999"]):
        result = _init(master, *args)
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr and "e.g." in result.stderr
    assert (master.data_dir / "master.cfg").read_text() == before

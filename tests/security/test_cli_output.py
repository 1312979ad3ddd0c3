"""What the CLI prints: text from nodes and other users never drives the terminal,
errors are one line with the exit code the rules give (2 bad input, 1 otherwise),
and a failed `master init` writes nothing."""

import os
import socket
import subprocess
import sys

import pytest

from ..conftest import run_cli, slapnode_cmd, unique_name
from .conftest import on

ESCAPE = "\x1b]0;pwned\x07\x1b[2J\u202eevil\u009b"


def test_node_reported_text_reaches_the_terminal_escaped(master, make_node):
    url = f"http://example.invalid/{unique_name('sr')}.cfg"
    master.client().add_software(url, unique_name("sr"))
    _, token = master.new_user()
    node = make_node(partitions=1)
    master.client(token).request_instance(title="t", software=url, node=on(node))
    instance = node.desired()["partitions"][0]["instance"]
    node.client.report(instances=[{"partition": "slappart0", "instance_id": instance["id"],
                                   "status": "error", "reason": ESCAPE,
                                   "connection": {ESCAPE: ESCAPE},
                                   "promises": [{"name": ESCAPE, "ok": False, "message": ESCAPE}]}])
    for args in (["instance", "show", "t"], ["instance", "list"], ["instance", "request", "t", url]):
        result = master.cli(*args, token=token)
        output = result.stdout + result.stderr
        assert "\x1b" not in output and "\u202e" not in output and "\u009b" not in output, args
        assert args[1] == "list" or "\\x1b" in output
    shown = master.cli("instance", "show", "t", "--json", token=token)
    assert "\x1b" not in shown.stdout and "\\u001b" in shown.stdout


def test_bad_parameter_files_are_one_line_and_exit_2(tmp_path, master):
    nul = tmp_path / "nul.xml"
    nul.write_bytes(b'<?xml version="1.0"?>\n<instance><parameter id="a">x\x00y</parameter></instance>\n')
    nan = tmp_path / "nan.xml"
    nan.write_text('<instance><parameter id="_">{"x": NaN}</parameter></instance>')
    for path in (nul, nan):
        result = master.cli("instance", "request", "t", "hello", "--parameters-xml", str(path))
        assert result.exit_code == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_serving_on_a_port_in_use_is_one_line_and_exit_1(master, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(slapnode_cmd("master", "serve", "--data-dir", str(master.data_dir),
                                             "--listen", f"127.0.0.1:{port}", "--insecure-http"),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "already in use" in result.stderr


def test_a_failed_master_init_writes_nothing(tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    data_dir = tmp_path / "new-master"
    result = run_cli(["master", "init", "--data-dir", str(data_dir), "--db",
                      f"postgresql+psycopg://nobody:x@127.0.0.1:{port}/nothing"])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert not data_dir.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    result = run_cli(["master", "init", "--data-dir", str(existing), "--db",
                      f"postgresql+psycopg://nobody:x@127.0.0.1:{port}/nothing"])
    assert result.exit_code == 1 and list(existing.iterdir()) == []

"""`slapnode standalone`: a master and this machine as its node in one command; a
request from another shell with no flags; nothing left running after Ctrl-C."""

import json
import os
import pwd
import subprocess
import sys
import time

import pytest
import requests

from .conftest import slapnode_cmd
from .standalone import standalone

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="standalone needs root")


def test_standalone_serves_a_request_from_another_shell(reachable_dir):
    with standalone(reachable_dir) as running:
        running.wait_running()
        text = running.log()
        assert f"export SLAPNODE_MASTER={running.url}" in text and "export SLAPNODE_TOKEN=" in text
        # another shell: no flags, the client config written by standalone
        request = subprocess.run(slapnode_cmd("instance", "request", "my-hello", "hello", "--parameter",
                                              "name=Ada", "--wait", "60", "--json"),
                                 capture_output=True, text=True, env=running.env, timeout=90)
        assert request.returncode == 0, request.stderr + running.log()
        url = json.loads(request.stdout)["connection"]["url"]
        assert requests.get(url, timeout=5, proxies={"http": None}).text == "Hello, Ada!"
        # Ctrl-C: instances and master stop, nothing of the partitions is left running
        running.interrupt()
        left = [line for u in pwd.getpwall() if u.pw_name.startswith(running.user_prefix)
                for line in subprocess.run(["ps", "-o", "stat=,args=", "-u", str(u.pw_uid)],
                                           capture_output=True, text=True).stdout.splitlines()
                if not line.startswith("Z")]      # (killed ones the machine's init has not reaped)
        assert left == [], f"processes left running: {left}"
        with pytest.raises(requests.ConnectionError):     # the master stopped too
            requests.get(running.url + "/api/v1/health", timeout=5, proxies={"http": None})


def test_the_master_dies_with_a_standalone_killed_outright(tmp_path):
    """The master runs in a session of its own (Ctrl-C reaches standalone, which stops it
    last); were standalone killed with no chance to stop it, the master goes too."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", f"""
import os, subprocess, sys, time
from slapnode.standalone import _dies_with
child = subprocess.Popen(["sleep", "60"], start_new_session=True,
                         preexec_fn=_dies_with(os.getpid()))
open({str(pid_file)!r}, "w").write(str(child.pid))
time.sleep(60)
"""])
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.kill()
        parent.wait(10)
        while os.path.exists(f"/proc/{child}") and \
                open(f"/proc/{child}/stat").read().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline, "the child outlived its killed parent"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait(10)
        if pid_file.exists() and pid_file.read_text():
            subprocess.run(["kill", "-9", pid_file.read_text()], capture_output=True)

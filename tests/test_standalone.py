"""`slapnode standalone`: a master and this machine as its node in one command; a
request from another shell with no flags; nothing left running after Ctrl-C."""

import json
import os
import pwd
import subprocess

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

"""`slapnode standalone`: a master and this machine as its node in one command; a
request from another shell with no flags; nothing left running after Ctrl-C."""

import json
import os
import pwd
import secrets
import signal
import subprocess
import time

import pytest
import requests

from slapnode import format as fmt
from slapnode import nodeconfig

from .conftest import free_port, slapnode_cmd
from .test_instances_system import _remove_ours

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="standalone needs root")


def test_standalone_serves_a_request_from_another_shell(reachable_dir):
    tag = secrets.token_hex(3)
    data = reachable_dir / "standalone"
    listen = f"127.0.0.1:{free_port()}"
    home = reachable_dir / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    env.pop("SLAPNODE_CLIENT_CONFIG", None)
    log = open(reachable_dir / "standalone.log", "w")
    process = subprocess.Popen(slapnode_cmd("standalone", "--data-dir", str(data), "--listen", listen,
                                            "--partitions", "2", "--user-prefix", f"sn{tag}u",
                                            "--bridge", f"snsa{tag}", "--ipv4-range",
                                            f"10.{230 + secrets.randbelow(20)}.{secrets.randbelow(250)}.0/24"),
                               stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    config = None
    try:
        deadline = time.monotonic() + 60
        while "node daemon running" not in (reachable_dir / "standalone.log").read_text():
            assert process.poll() is None, (reachable_dir / "standalone.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        text = (reachable_dir / "standalone.log").read_text()
        assert f"export SLAPNODE_MASTER=http://{listen}" in text and "export SLAPNODE_TOKEN=" in text
        config = nodeconfig.load(data / "node.cfg")
        # another shell: no flags, the client config written by standalone
        request = subprocess.run(slapnode_cmd("instance", "request", "my-hello", "hello", "--parameter",
                                              "name=Ada", "--wait", "60", "--json"),
                                 capture_output=True, text=True, env=env, timeout=90)
        assert request.returncode == 0, request.stderr + (reachable_dir / "standalone.log").read_text()
        url = json.loads(request.stdout)["connection"]["url"]
        assert requests.get(url, timeout=5, proxies={"http": None}).text == "Hello, Ada!"
        # Ctrl-C: instances and master stop, nothing of the partitions is left running
        os.killpg(process.pid, signal.SIGINT)
        process.wait(30)
        left = [line for u in pwd.getpwall() if u.pw_name.startswith(f"sn{tag}u")
                for line in subprocess.run(["ps", "-o", "stat=,args=", "-u", str(u.pw_uid)],
                                           capture_output=True, text=True).stdout.splitlines()
                if not line.startswith("Z")]      # (killed ones the machine's init has not reaped)
        assert left == [], f"processes left running: {left}"
    finally:                            # clean up whatever happened, assert nothing here
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()
        if config is not None:
            fmt.reconcile(config, None, remove_all=True, force=True)
        _remove_ours(f"sn{tag}u", f"sn{tag}usoft")

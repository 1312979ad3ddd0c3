"""Discovery on the LAN: a master served with ``--advertise`` in one network namespace
is found by ``node discover`` in another (multicast DNS over the veth between them, with
its URL and CA fingerprint), and ``node register --discover NAME`` enrolls with it and
pins that CA; a fingerprint that differs from the announced one is refused. Only
addresses in the two namespaces made here are used."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from slapnode import nodeconfig

from .conftest import free_port, sh, slapnode_cmd, stop_group

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture
def lan():
    tag = secrets.token_hex(2)
    net = f"10.253.{secrets.randbelow(250)}"
    here, there = f"sn{tag}m", f"sn{tag}n"
    base = Path(tempfile.mkdtemp(prefix="slapnode-lan-"))
    os.chmod(base, 0o755)
    procs = []
    try:
        for ns in (here, there):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", f"sn{tag}a", "netns", here, "type", "veth", "peer", "name",
           f"sn{tag}b", "netns", there)
        for ns, dev, address in ((here, f"sn{tag}a", f"{net}.1"), (there, f"sn{tag}b", f"{net}.2")):
            sh("ip", "addr", "add", f"{address}/24", "dev", dev, ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
            sh("ip", "route", "add", "224.0.0.0/4", "dev", dev, ns=ns)
        yield {"tag": tag, "here": here, "there": there, "master": f"{net}.1", "base": base,
               "procs": procs}
    finally:
        for proc in procs:
            stop_group(proc, 5)
        for ns in (here, there):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_a_node_finds_the_master_on_the_lan_and_pins_its_ca(lan):
    base, name = lan["base"], f"lab-{lan['tag']}"
    data = base / "master"
    init = subprocess.run(slapnode_cmd("master", "init", "--data-dir", data, "--name", lan["master"]),
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    fingerprint = init.stderr.split("--ca-fingerprint): ")[1].split()[0]
    admin = init.stdout.strip().splitlines()[-1]
    port = free_port()
    log = open(base / "master.log", "w")
    lan["procs"].append(subprocess.Popen(
        ["ip", "netns", "exec", lan["here"], *slapnode_cmd(
            "master", "serve", "--data-dir", data, "--listen", f"{lan['master']}:{port}",
            "--advertise", name, "--log-level", "warning")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    url = f"https://{lan['master']}:{port}"

    found = {}
    deadline = time.monotonic() + 30
    while name not in found and time.monotonic() < deadline:
        listing = sh(*slapnode_cmd("node", "discover", "--json", "--seconds", "2"), ns=lan["there"],
                     check=False, timeout=60)
        assert listing.returncode == 0, listing.stderr
        found = {m["name"]: m for m in json.loads(listing.stdout)}
    assert found[name] == {"name": name, "url": url, "ca_fingerprint": fingerprint}, \
        (found, (base / "master.log").read_text())

    token = sh(sys.executable, "-c", (
        "import sys; from slapnode.client import Client\n"
        "c = Client(sys.argv[1], sys.argv[2], ca_file=sys.argv[3])\n"
        "print(c.create_enrollment_token('lan-node', scope='public')['token'])"),
        url, admin, data / "tls" / "ca.pem", ns=lan["there"], timeout=60).stdout.strip()
    options = ["--partitions", "1", "--isolation", "user", "--instance-root", base / "srv",
               "--software-root", base / "soft", "--state-dir", base / "state", "--bridge",
               f"snb{lan['tag']}", "--ipv4-range", "10.254.1.0/24", "--ipv6-range",
               "fd5b:1::/64"]
    wrong = sh(*slapnode_cmd("node", "register", "--discover", name, "--token", token,
                             "--ca-fingerprint", "SHA256:" + "0" * 64, "--config", base / "x.cfg",
                             *options), ns=lan["there"], check=False, timeout=60)
    assert wrong.returncode == 2 and "check with its admin" in wrong.stderr
    assert not (base / "x.cfg").exists()
    done = sh(*slapnode_cmd("node", "register", "--discover", name, "--token", token,
                            "--config", base / "node.cfg", *options),
              ns=lan["there"], check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"found {name} at {url}, CA {fingerprint}" in done.stderr
    config = nodeconfig.load(base / "node.cfg")
    assert config.master == url and config.name == "lan-node" and config.ca_file

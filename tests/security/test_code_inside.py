"""Attacks through what a partition runs: parameters written as template source, an
instance profile and promises that look around the host. On a real LXC node, all of
it must run inside the partition's container, as its user, and parameters must stay
data."""

import os
import re
from urllib.parse import urlparse

import pytest

from ..conftest import published
from ..test_instances_system import get, make_node, _teardown
from .conftest import add_release, needs_lxc, write_release

pytestmark = pytest.mark.parametrize("master", ["sqlite"], indirect=True)


def test_a_parameter_is_served_literally_never_rendered(lxc_node):
    for payload in ("{{ 7*7 }}", "{{ self.__init__.__globals__ }}", "${slap-configuration:user}",
                    "{% for x in range(3) %}x{% endfor %}"):
        lxc_node.request("ada", parameters={"name": payload})
        lxc_node.passes()
        view = lxc_node.user_client.show_instance("ada")
        assert view["status"] == "ready", view["reason"]
        assert get(view["connection"]["url"]).text == f"Hello, {payload}!"


def test_an_inline_template_fed_by_a_parameter_is_refused(master, lxc_node, base):
    url = add_release(master, write_release(base, """[buildout]
parts = page
[page]
recipe = slapnode:template
output = ${slap-configuration:partition-root}/srv/page
inline = Hello, ${slap-parameter:name}!
"""))
    master.client().supply(url, lxc_node.config.name)
    lxc_node.request("ada", software=url, parameters={"name": "{{ 7*7 }}"})
    lxc_node.passes()
    view = lxc_node.user_client.show_instance("ada")
    assert view["status"] == "error" and "parameters are data" in view["reason"]
    part = lxc_node.part(view["partition"])
    assert not (part.root / "srv" / "page").exists()


def test_templates_render_in_the_sandbox(master, lxc_node, base):
    url = add_release(master, write_release(base, """[buildout]
parts = page
[page]
recipe = slapnode:template
output = ${slap-configuration:partition-root}/srv/page
inline = {{ parameters.name.__class__.__mro__ }}
"""))
    master.client().supply(url, lxc_node.config.name)
    lxc_node.request("ada", software=url, parameters={"name": "x"})
    lxc_node.passes()
    view = lxc_node.user_client.show_instance("ada")
    assert view["status"] == "error" and "__class__" in view["reason"], view["reason"]


PROBE = """[buildout]
parts = probe done
[probe]
recipe = slapnode:command
command =
  cd ${slap-configuration:partition-root}/srv
  readlink /proc/self/ns/net > netns
  readlink /proc/self/ns/pid > pidns
  grep -E '^(Uid|Gid|Groups|NoNewPrivs):' /proc/self/status > status
  /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', MASTER_PORT), 2)" 2> master || true
[done]
recipe = slapnode:publish
ok = yes
"""


def _ns(name):
    return os.readlink(f"/proc/self/ns/{name}")


def test_the_instance_profile_runs_inside_the_container_as_the_partition_user(master, lxc_node, base):
    port = urlparse(master.url).port
    url = add_release(master, write_release(base, PROBE.replace("MASTER_PORT", str(port))))
    master.client().supply(url, lxc_node.config.name)
    lxc_node.request("probe", software=url)
    lxc_node.passes()
    view = lxc_node.user_client.show_instance("probe")
    assert published(view) == {"ok": "yes"}, view["reason"]
    part = lxc_node.part(view["partition"])
    srv = part.root / "srv"
    assert (srv / "netns").read_text().strip() != _ns("net")        # not the host's network
    assert (srv / "pidns").read_text().strip() != _ns("pid")        # nor its processes
    status = dict(line.split(":", 1) for line in (srv / "status").read_text().splitlines())
    assert status["Uid"].split()[0] == str(part.uid) and status["Gid"].split()[0] == str(part.gid)
    assert status["Groups"].split() in ([], [str(part.gid)])        # no group of root's
    assert status["NoNewPrivs"].strip() == "1"                      # setuid programs cannot help
    assert "refused" in (srv / "master").read_text().lower()        # the master is out of reach


def test_promises_run_inside_the_container(master, lxc_node, base):
    port = urlparse(master.url).port
    url = add_release(master, write_release(base, f"""[buildout]
parts = mark master-http master-tcp local-file
[mark]
recipe = slapnode:promise
command = readlink /proc/self/ns/net > ${{slap-configuration:partition-root}}/srv/promise-netns
[master-http]
recipe = slapnode:promise
http = {master.url}/api/v1/health
timeout = 2
[master-tcp]
recipe = slapnode:promise
tcp = 127.0.0.1:{port}
timeout = 2
[local-file]
recipe = slapnode:promise
http = file:///etc/shadow
"""))
    master.client().supply(url, lxc_node.config.name)
    lxc_node.request("probe", software=url)
    lxc_node.passes()
    view = lxc_node.user_client.show_instance("probe")
    results = {p["name"]: p for p in view["promises"]}
    assert results["mark"]["ok"], results["mark"]
    assert not results["master-http"]["ok"] and "refused" in results["master-http"]["message"].lower()
    assert not results["master-tcp"]["ok"] and "refused" in results["master-tcp"]["message"].lower()
    assert not results["local-file"]["ok"] and "only http" in results["local-file"]["message"]
    part = lxc_node.part(view["partition"])
    assert (part.root / "srv" / "promise-netns").read_text().strip() != _ns("net")


def test_with_user_isolation_the_profile_still_runs_as_the_partition_user(master, base):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    port = urlparse(master.url).port
    url = add_release(master, write_release(base, PROBE.replace("MASTER_PORT", str(port))))
    node = make_node(master, "user", base, url, partitions=1)
    try:
        node.request("probe", software=url)
        node.passes()
        part = node.part("slappart0")
        status = (part.root / "srv" / "status").read_text()
        assert re.search(rf"^Uid:\s+{part.uid}\b", status, re.M)
        assert re.search(r"^Groups:\s*(\d+\s*)?$", status, re.M)
    finally:
        _teardown(node)


def _status(pid):
    with open(f"/proc/{pid}/status") as stream:
        return dict(line.rstrip("\n").split(":\t", 1) for line in stream if ":\t" in line)


def test_the_supervisord_the_zygote_forks_is_the_partitions_own(lxc_node):
    """A cold partition's supervisord comes from the agent's zygote (deploy/zygote.py), a
    root process: what runs must be exactly what lxc would have started. In the
    container's namespaces and cgroups, adopted by its init, as the partition user
    with no group, no capability, no_new_privs, nothing of root's open."""
    from slapnode.deploy import isolation, zygote

    lxc_node.request("z")
    lxc_node.passes()
    view = lxc_node.user_client.show_instance("z")
    assert view["status"] == "ready", view["reason"]
    part = lxc_node.part(view["partition"])
    lxc = isolation.LxcIsolation(lxc_node.config)
    mark = (lxc.state() / f"{lxc.container(part)}.services").read_text().split()
    assert len(mark) == 2, "the supervisord did not come from the zygote"
    pid = int(mark[0])
    assert zygote.started(pid) == int(mark[1])
    _running, init = lxc._state(part)
    for name in ("net", "pid", "mnt", "uts", "ipc", "cgroup"):
        ours = os.readlink(f"/proc/{pid}/ns/{name}")
        assert ours == os.readlink(f"/proc/{init}/ns/{name}") != _ns(name), name
    with open(f"/proc/{pid}/cgroup") as a, open(f"/proc/{init}/cgroup") as b:
        assert a.read() == b.read()
    status = _status(pid)
    assert status["Uid"].split() == [str(part.uid)] * 4 and status["Gid"].split() == [str(part.gid)] * 4
    assert status["Groups"].split() == []
    assert {status[c] for c in ("CapInh", "CapPrm", "CapEff", "CapAmb")} == {"0000000000000000"}
    assert status["NoNewPrivs"] == "1"
    assert status["Name"] == "supervisord"
    parent = int(status["PPid"])
    assert os.readlink(f"/proc/{parent}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
    assert status["NSpid"].split()[-1] != status["NSpid"].split()[0]      # numbered inside
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        assert target.startswith(("/dev/null", str(part.root), str(lxc.state()), "socket:",
                                  "pipe:", "anon_inode:")), target
    with open(f"/proc/{pid}/environ", "rb") as stream:
        assert b"SLAPNODE" not in stream.read()
    # its services are its children, in the container too
    assert view["connection"]["url"]

"""Attacks through a partition's own files: links, hard links, FIFOs, huge files and a
swapped socket, planted by the partition user where the root agent used to write or
read. Each one is tried on a real LXC node; the agent must follow none of them."""

import os
import subprocess
import time

import pytest

from slapnode import format as fmt
from slapnode import safefs
from slapnode.deploy import deployer, supervisor

from ..test_instances_system import get, isolation_mod
from .conftest import as_user, root_secret

pytestmark = pytest.mark.parametrize("master", ["sqlite"], indirect=True)


def deployed(node, *names):
    for index, name in enumerate(names):
        node.request(name, parameters={"name": name})
    node.passes()
    for name in names:
        view = node.user_client.show_instance(name)
        assert view["status"] == "ready", view["reason"]
    return [node.part(node.user_client.show_instance(n)["partition"]) for n in names]


def test_a_linked_supervisord_conf_is_replaced_never_written_through(lxc_node, base):
    part, = deployed(lxc_node, "ada")
    target, text = root_secret(base)
    root_dir = base / "root-dir"
    root_dir.mkdir()
    as_user(part, "ln", "-sfn", str(target), str(part.root / "etc" / "supervisord.conf"))
    as_user(part, "rm", "-rf", str(part.root / "tmp"))
    as_user(part, "ln", "-s", str(root_dir), str(part.root / "tmp"))
    as_user(part, "rm", "-rf", str(part.root / "var" / "log"))
    as_user(part, "ln", "-s", str(root_dir), str(part.root / "var" / "log"))
    lxc_node.user_client.change_instance("ada", "stopped")      # the container goes ...
    lxc_node.passes()
    lxc_node.request("ada", parameters={"name": "Grace"})        # ... a redeploy starts it
    lxc_node.passes()
    st = target.stat()
    assert target.read_text() == text and (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
    assert list(root_dir.iterdir()) == [] and root_dir.stat().st_uid == 0
    assert not (part.root / "etc" / "supervisord.conf").is_symlink()    # the user's own again


def test_a_linked_program_directory_is_not_chowned_or_filled(lxc_node, base):
    part, = deployed(lxc_node, "ada")
    root_dir = base / "programs"
    root_dir.mkdir()
    as_user(part, "rm", "-rf", str(part.root / "etc" / "supervisor.d"))
    as_user(part, "ln", "-s", str(root_dir), str(part.root / "etc" / "supervisor.d"))
    lxc_node.request("ada", parameters={"name": "Grace"})
    lxc_node.passes()
    assert root_dir.stat().st_uid == 0 and list(root_dir.iterdir()) == []
    # the partition broke itself: its instance says so, nothing else happened
    assert lxc_node.user_client.show_instance("ada")["status"] == "error"


def test_published_links_show_neither_root_files_nor_another_partition(lxc_node, base):
    a, b = deployed(lxc_node, "ada", "bob")
    secret, text = root_secret(base, text='{"values": {"stolen": "TOPSECRET"}}')
    publish = a.root / "etc" / "publish"
    as_user(a, "ln", "-s", str(secret), str(publish / "root.json"))
    as_user(a, "ln", "-s", str(b.root / "etc" / "publish" / "publish.json"), str(publish / "b.json"))
    hard = as_user(a, "ln", str(secret), str(publish / "hard.json"), check=False)
    assert hard.returncode != 0         # the kernel's protected_hardlinks refuses it ...
    as_user(a, "mkfifo", str(publish / "fifo.json"))                # ... a FIFO would block
    as_user(a, "truncate", "-s", "5G", str(publish / "huge.json"))  # ... and a sparse 5 GB file
    lxc_node.request("ada", parameters={"name": "Ada2"})
    started = time.monotonic()
    lxc_node.passes()
    assert time.monotonic() - started < 30              # nothing blocked, nothing was read whole
    view = lxc_node.user_client.show_instance("ada")
    assert view["status"] == "ready", view["reason"]
    assert "stolen" not in view["connection"] and "TOPSECRET" not in str(view)
    bob_url = lxc_node.user_client.show_instance("bob")["connection"]["url"]
    assert bob_url not in str(view["connection"].values())


def test_root_reads_in_a_partition_refuse_links_fifos_and_huge_files(lxc_node, base):
    part, = deployed(lxc_node, "ada")
    secret, _ = root_secret(base)
    as_user(part, "ln", "-s", str(secret), str(part.root / "etc" / "link"))
    as_user(part, "mkfifo", str(part.root / "etc" / "fifo"))
    as_user(part, "truncate", "-s", "5G", str(part.root / "etc" / "huge"))
    for name in ("link", "fifo", "huge"):
        started = time.monotonic()
        with pytest.raises(safefs.Refused):
            safefs.read_file(part.root, f"etc/{name}", 1 << 20, uid=part.uid)
        assert time.monotonic() - started < 1
    as_user(part, "rm", "-rf", str(part.root / "var"))
    as_user(part, "ln", "-s", "/etc", str(part.root / "var"))
    with pytest.raises(safefs.Refused):
        safefs.read_file(part.root, "var/passwd", 1 << 20)


def test_a_swapped_supervisord_socket_does_not_reach_another_partition(lxc_node):
    a, b = deployed(lxc_node, "ada", "bob")
    b_services = supervisor.programs(b.root, uid=b.uid)
    assert b_services["httpd"][0] in ("RUNNING", "STARTING")
    b_pids = sorted(isolation_mod.processes_of(b.uid))
    socket_a = a.root / "var" / "run" / "supervisord.sock"
    as_user(a, "rm", "-f", str(socket_a))
    as_user(a, "ln", "-s", str(b.root / "var" / "run" / "supervisord.sock"), str(socket_a))
    assert supervisor.programs(a.root, uid=a.uid) == {}          # refused, not followed
    as_user(a, "rm", "-f", str(socket_a))
    subprocess.run(["mv", str(a.root / "var" / "run"), str(a.root / "var" / "run.old")],
                   user=a.uid, group=a.gid, check=True)
    as_user(a, "ln", "-s", str(b.root / "var" / "run"), str(a.root / "var" / "run"))
    assert supervisor.programs(a.root, uid=a.uid) == {}
    lxc_node.user_client.change_instance("ada", "stopped")     # the agent stops "its" services
    lxc_node.passes()
    assert sorted(isolation_mod.processes_of(b.uid)) == b_pids   # bob's were never touched
    assert get(lxc_node.user_client.show_instance("bob")["connection"]["url"]).text == "Hello, bob!"


def test_a_swapped_deployer_socket_reaches_no_other_partition(lxc_node):
    """Root talks to a partition's warm deployer (deploy/deployer.py) only through a socket
    that partition's user owns, never through a link: one partition pointing its socket
    at another's deployer is refused, and its redeploy takes the long way, still as itself."""
    a, b = deployed(lxc_node, "ada", "bob")
    socket_a, socket_b = (p.root / "var" / "run" / "deploy.sock" for p in (a, b))
    assert socket_b.is_socket()     # bob's deployer is still there (it stays a while)
    as_user(a, "rm", "-f", str(socket_a))
    as_user(a, "ln", "-s", str(socket_b), str(socket_a))
    assert deployer.ask(a.root, a.uid, "apply", {}, 5, 1 << 20) is None    # refused
    as_user(a, "rm", "-f", str(socket_a))
    as_user(a, "ln", str(socket_b), str(socket_a), check=False)     # a hard link: not a's
    if socket_a.exists():
        assert deployer.ask(a.root, a.uid, "apply", {}, 5, 1 << 20) is None
    lxc_node.request("ada", parameters={"name": "Grace"})
    lxc_node.passes()
    view = lxc_node.user_client.show_instance("ada")
    assert view["status"] == "ready", view["reason"]
    assert get(view["connection"]["url"]).text == "Hello, Grace!"
    assert get(lxc_node.user_client.show_instance("bob")["connection"]["url"]).text == "Hello, bob!"


def test_naming_a_container_never_renames_another_namespace(lxc_node):
    """Root names a warm container through the pid of its init (lxc-info's): a pid that is
    not in that container's cgroup (it died and the pid went elsewhere: the host's own
    processes, another partition's) is never entered, whatever name is asked for."""
    a, b = deployed(lxc_node, "ada", "bob")
    lxc = isolation_mod.isolation_for(lxc_node.config)

    def uts_of(pid):
        return subprocess.run(["nsenter", "--target", str(pid), "--uts", "hostname"],
                              capture_output=True, text=True, check=True).stdout.strip()
    _, b_init = lxc._state(b)
    before = (uts_of(os.getpid()), uts_of(b_init))
    for pid in (str(os.getpid()), "1", b_init):
        lxc._rename(a, "taken.example.test", pid)
    assert (uts_of(os.getpid()), uts_of(b_init)) == before
    _, a_init = lxc._state(a)
    lxc._rename(a, "taken.example.test", a_init)      # its own init: named
    assert uts_of(a_init) == "taken.example.test"


def test_destroy_removes_links_never_what_they_point_to(lxc_node, base):
    part, = deployed(lxc_node, "ada")
    precious = base / "precious"
    precious.mkdir()
    (precious / "keep").write_text("keep me")
    secret, text = root_secret(base)
    as_user(part, "ln", "-s", str(precious), str(part.root / "srv" / "dir-link"))
    as_user(part, "ln", "-s", str(secret), str(part.root / "file-link"))
    lxc_node.user_client.change_instance("ada", "destroyed")
    lxc_node.passes()
    assert (precious / "keep").read_text() == "keep me" and secret.read_text() == text
    assert sorted(p.name for p in part.root.iterdir()) == ["etc", "srv", "tmp", "var"]


def test_format_replaces_a_linked_skeleton_directory_without_chowning_its_target(lxc_node, base):
    part, = deployed(lxc_node, "ada")
    root_dir = base / "root-owned"
    root_dir.mkdir()
    lxc_node.user_client.change_instance("ada", "stopped")
    lxc_node.passes()
    as_user(part, "rm", "-rf", str(part.root / "var" / "log"))
    as_user(part, "ln", "-s", str(root_dir), str(part.root / "var" / "log"))
    fmt.reconcile(lxc_node.config, lxc_node.client)
    assert root_dir.stat().st_uid == 0
    log_dir = part.root / "var" / "log"
    assert log_dir.is_dir() and not log_dir.is_symlink() and log_dir.stat().st_uid == part.uid


RACER = """
import os, sys, time
root, target = sys.argv[1], sys.argv[2]
real, swap = os.path.join(root, "etc", "race"), os.path.join(root, "etc", "race.swap")
os.makedirs(real, exist_ok=True)
with open(os.path.join(real, "data"), "w") as f:
    f.write("mine")
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:       # swap the directory for a link to root's, and back
    os.rename(real, real + ".d")
    os.symlink(target, real)
    os.rename(real, swap)
    os.rename(real + ".d", real)
    os.unlink(swap)
"""


def test_a_partition_racing_root_between_check_and_use_never_wins(lxc_node, base):
    """The user swaps a directory for a link to root's as fast as it can while root
    reads through it: a walk by descriptors has no window between check and use."""
    part, = deployed(lxc_node, "ada")
    secret_dir = base / "secret-dir"
    secret_dir.mkdir()
    (secret_dir / "data").write_text("ROOT-ONLY")
    os.chmod(secret_dir / "data", 0o600)
    racer = subprocess.Popen(["python3", "-c", RACER, str(part.root), str(secret_dir), "3"],
                             user=part.uid, group=part.gid, extra_groups=[], cwd=part.root)
    seen = set()
    try:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            try:
                seen.add(safefs.read_file(part.root, "etc/race/data", 1024))   # no owner check
            except OSError:
                seen.add(b"refused")
    finally:
        racer.wait(10)
    assert b"ROOT-ONLY" not in seen and b"mine" in seen

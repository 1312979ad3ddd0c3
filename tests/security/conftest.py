"""What the attack tests share: a real LXC node on a real master, a release of the
test's own (an instance profile written by the attacker, or by the test), and
running commands as a partition user, as an attacker in that partition would.

Every node is made with names unique to this run and taken apart in a
finalizer (processes, users, bridge), whatever the test did.
"""

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ..conftest import require_lxc, unique_name
from ..test_instances_system import _teardown, make_node


def needs_lxc():
    if os.geteuid() != 0:
        pytest.skip("attacks on a node need root (users, containers)")
    require_lxc()


def on(node):
    """The node filter that puts a request on ``node`` (the test master has others)."""
    return {"computer": node.name}


def write_release(base, instance_cfg, name="sr"):
    """A release whose instance profile is ``instance_cfg`` (copied as is, no
    template rendering); returns the path of its software.cfg."""
    sr = Path(base) / f"{name}-{secrets.token_hex(3)}"
    sr.mkdir()
    (sr / "instance.cfg.in").write_text(instance_cfg)
    (sr / "software.cfg").write_text("""[buildout]
parts = instance
[instance]
recipe = slapnode:download
url = ${:_profile_base_location_}/instance.cfg.in
destination = ${buildout:directory}
filename = instance.cfg
""")
    os.chmod(sr, 0o755)
    return str(sr / "software.cfg")


def add_release(master, path, schema=None):
    master.client().add_software(path, unique_name("sr"), schema=schema)
    return path


@pytest.fixture
def base():
    path = Path(tempfile.mkdtemp(prefix="slapnode-sec-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lxc_node(master, base, catalog_hello):
    """An LXC node with two partitions, the shipped hello release supplied."""
    needs_lxc()
    handle = make_node(master, "lxc", base, catalog_hello, partitions=2)
    try:
        yield handle
    finally:
        _teardown(handle)


def as_user(part, *cmd, check=True):
    """Run ``cmd`` as the partition's user, as an attacker in the partition would."""
    result = subprocess.run(list(cmd), user=part.uid, group=part.gid, extra_groups=[],
                            capture_output=True, text=True, cwd=part.root)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def root_secret(base, text="TOPSECRET-" + secrets.token_hex(4), name="secret"):
    """A root-owned 0600 file in a directory everyone can traverse: what an attacker
    would like to read or overwrite."""
    path = Path(base) / name
    path.write_text(text)
    os.chmod(path, 0o600)
    return path, text

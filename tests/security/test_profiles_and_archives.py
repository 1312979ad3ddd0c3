"""Attacks through a release: a profile whose expansion acts (as root, when the node
computes its digest), a profile that reads root's files, and archives (downloads and
the binary cache) that write outside their directory through links."""

import io
import os
import pwd
import secrets
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from slapnode import nodeconfig
from slapnode.format import plan, users
from slapnode.recipes import RecipeError, safe_extract
from slapnode.software.supply import SoftwarePass

from ..conftest import run_cli
from .conftest import root_secret

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="builds run as a software user")


@pytest.fixture
def software_user():
    name = f"sn{secrets.token_hex(3)}x"
    users.create_user(name, "/nonexistent", plan.SOFTWARE_MARK)
    try:
        yield name
    finally:
        users.delete_user(name)


def _profile(base, text):
    path = base / f"sw-{secrets.token_hex(3)}.cfg"
    path.write_text(text)
    return str(path)


def _config(base, software_user):
    root = base / "software"
    root.mkdir(exist_ok=True)
    return nodeconfig.NodeConfig(software_root=str(root), software_user=software_user,
                                 state_dir=str(base / "state"))


class _Doc:
    @staticmethod
    def of(url):
        return {"software": [{"url": url, "state": "available"}], "partitions": []}


PASSWORD_PROFILE = """[buildout]
parts = pw use
[pw]
recipe = slapnode:password
storage-path = {target}
[use]
recipe = slapnode:mkdir
paths = ${{buildout:directory}}/x-${{pw:passwd}}
"""


@needs_root
def test_computing_a_digest_acts_nowhere_and_never_as_root(base, software_user):
    target = base / "root-only" / "pwned"
    target.parent.mkdir()
    os.chmod(target.parent, 0o755)                  # root's; the software user cannot write
    url = _profile(base, PASSWORD_PROFILE.format(target=target))
    config = _config(base, software_user)
    results = SoftwarePass(config).run(_Doc.of(url))
    assert not target.exists()                      # neither root nor the build wrote it
    assert results[0].status == "error"
    # the release author's command, as root with --user: the same
    result = run_cli(["software", "build", url, "--software-root", str(base / "author"),
                      "--user", software_user])
    assert result.exit_code != 0 and not target.exists()


@needs_root
def test_a_digest_has_no_side_effect_even_where_the_build_may_write(base, software_user):
    config = _config(base, software_user)
    target = Path(config.software_root) / "kept-password"
    url = _profile(base, PASSWORD_PROFILE.format(target=target))
    from slapnode.software.supply import SoftwareUser

    user = SoftwareUser(software_user)
    user.make_dirs(config.software_root, ".download-cache")
    os.chown(config.software_root, pwd.getpwnam(software_user).pw_uid, -1)
    digests = user.digests(config.software_root, Path(config.software_root) / ".download-cache", [url])
    assert len(digests[url]) == 64 and not target.exists()      # pure: nothing written
    results = SoftwarePass(config).run(_Doc.of(url))
    assert results[0].status == "available", results[0].log_tail
    assert target.exists()                                       # the build itself may
    assert SoftwarePass(config).run(_Doc.of(url))[0].how == "up to date"   # digest is stable


@needs_root
def test_a_profile_extending_a_root_only_file_learns_nothing(base, software_user):
    secret, text = root_secret(base, text="[secret]\nvalue = TOPSECRET-42\n")
    url = _profile(base, f"""[buildout]
extends = {secret}
parts = leak
[leak]
recipe = slapnode:mkdir
paths = ${{buildout:directory}}/${{secret:value}}
""")
    results = SoftwarePass(_config(base, software_user)).run(_Doc.of(url))
    assert results[0].status == "error" and "Permission denied" in results[0].log_tail
    assert "TOPSECRET" not in repr(results)


# -- archives ----------------------------------------------------------------------------

def _tar(*members):
    """A tar.gz made of (name, kind, data_or_target) members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, value
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, value
                tar.addfile(info)
    return buffer.getvalue()


EVIL = {
    "absolute symlink, then a file through it": [("d", "sym", "{outside}"), ("d/x", "file", b"x")],
    "'..' symlink, then a file through it": [("d", "sym", "../.."), ("d/x", "file", b"x")],
    "symlink out, then written as a file": [("f", "sym", "{outside}/x"), ("f", "file", b"x")],
    "symlink to a symlink out": [("a", "sym", "b"), ("b", "sym", "../../x")],
    "hard link out": [("h", "hard", "../../x")],
    "hard link through a symlink": [("d", "sym", "."), ("h", "hard", "d/inside")],
    "absolute member": [("/abs", "file", b"x")],
    "dot-dot member": [("../x", "file", b"x")],
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_archive_members_never_land_outside_their_directory(tmp_path, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [(n, k, v.format(outside=outside) if isinstance(v, str) else v)
               for n, k, v in EVIL[case]]
    destination = tmp_path / "dest"
    destination.mkdir()
    with tarfile.open(fileobj=io.BytesIO(_tar(*members)), mode="r:gz") as tar:
        with pytest.raises(RecipeError):
            safe_extract(tar, destination)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "x").exists()


def test_an_existing_link_in_the_destination_is_replaced_not_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "dest"
    destination.mkdir()
    (destination / "f").symlink_to(outside / "victim")
    with tarfile.open(fileobj=io.BytesIO(_tar(("f", "file", b"new"))), mode="r:gz") as tar:
        safe_extract(tar, destination)
    assert (destination / "f").read_bytes() == b"new" and not (outside / "victim").exists()


def test_a_harmless_archive_with_inner_links_extracts(tmp_path):
    data = _tar(("top", "dir", None), ("top/a", "file", b"a"), ("top/b", "sym", "a"),
                ("top/c", "hard", "top/a"))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        safe_extract(tar, tmp_path)
    assert (tmp_path / "top" / "b").read_bytes() == b"a" and (tmp_path / "top" / "c").read_bytes() == b"a"


@needs_root
def test_a_poisoned_cache_archive_is_refused_by_the_software_user(base, software_user):
    outside = base / "outside"
    outside.mkdir()
    os.chmod(outside, 0o777)                # even where the software user could write
    directory = base / "release"
    directory.mkdir()
    entry = pwd.getpwnam(software_user)
    os.chown(directory, entry.pw_uid, entry.pw_gid)
    archive = _tar(("d", "sym", str(outside)), ("d/planted", "file", b"x"))
    result = subprocess.run([sys.executable, "-m", "slapnode.software.worker", "unpack", "-",
                             str(directory), "0" * 64], input=archive, capture_output=True,
                            user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
    assert result.returncode == 1 and b"symbolic link" in result.stderr
    assert list(outside.iterdir()) == [] and not (directory / ".completed").exists()

"""Building real software releases: hello, a cmmi build of a tarball served on
loopback, a deb build of a real Debian package, a killed build that resumes,
the node's software pass as the software user, and the binary cache."""

import http.server
import io
import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from slapnode import nodeconfig
from slapnode.format import plan, users
from slapnode.recipes import file_digest
from slapnode.software import engine, software_dir
from slapnode.software.supply import Backoff, SoftwarePass, cache_key

from .conftest import run_cli, unique_name

ROOT = Path(__file__).resolve().parent.parent
HELLO = str(ROOT / "software-releases" / "hello" / "software.cfg")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="builds run as a software user")


@pytest.fixture
def software_user():
    """An unprivileged user made for this test (and removed after)."""
    name = f"sn{secrets.token_hex(3)}b"
    users.create_user(name, "/nonexistent", plan.SOFTWARE_MARK)
    try:
        yield name
    finally:
        users.delete_user(name)


@pytest.fixture
def tmp_path(reachable_dir):
    """Here, a directory the software user can reach."""
    return reachable_dir


@pytest.fixture
def served(tmp_path):
    """A directory served over HTTP on loopback: (directory, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def node_config(tmp_path, software_user, **extra):
    root = tmp_path / "software"
    root.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(software_user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    return nodeconfig.NodeConfig(software_root=str(root), software_user=software_user,
                                 state_dir=str(tmp_path / "state"), **extra)


# -- the engine, in-process --------------------------------------------------------------

def test_hello_builds_and_a_second_run_does_nothing(tmp_path):
    directory = tmp_path / "sr"
    digest, built = engine.build(HELLO, directory)
    assert built and (directory / ".completed").read_text().strip() == digest
    assert "recipe = slapnode:service" in (directory / "instance.cfg").read_text()
    assert f"/usr/bin/python3 -I -S {directory}/serve.py" in (directory / "instance.cfg").read_text()
    assert engine.build(HELLO, directory) == (digest, False)


def test_a_profile_that_does_not_parse_builds_nothing(tmp_path):
    profile = tmp_path / "software.cfg"
    profile.write_text("[buildout]\nparts = a b\n[a]\nrecipe = slapnode:mkdir\n"
                       "paths = ${:location}\n[b]\nrecipe = slapnode:command\ncommand = ${nope:x}\n")
    with pytest.raises(Exception, match="no section \\[nope\\]"):
        engine.build(str(profile), tmp_path / "sr")
    assert not (tmp_path / "sr").exists()


def test_a_changed_profile_rebuilds_only_what_changed(tmp_path):
    profile = tmp_path / "software.cfg"
    text = ("[buildout]\nparts = a b\n[a]\nrecipe = slapnode:command\n"
            "command = echo run >> ${buildout:directory}/a.count\n"
            "[b]\nrecipe = slapnode:command\ncommand = echo ${:v} > ${buildout:directory}/b.txt\nv = 1\n")
    profile.write_text(text)
    directory = tmp_path / "sr"
    first, _ = engine.build(str(profile), directory)
    profile.write_text(text.replace("v = 1", "v = 2"))
    second, built = engine.build(str(profile), directory)
    assert built and second != first
    assert (directory / "a.count").read_text() == "run\n"           # a untouched
    assert (directory / "b.txt").read_text() == "2\n"


def test_a_failed_build_never_looks_complete(tmp_path):
    profile = tmp_path / "software.cfg"
    profile.write_text("[buildout]\nparts = a\n[a]\nrecipe = slapnode:command\ncommand = exit 3\n")
    with pytest.raises(Exception, match="exit code 3"):
        engine.build(str(profile), tmp_path / "sr")
    assert not (tmp_path / "sr" / ".completed").exists()
    assert "exit 3" in (tmp_path / "sr" / ".build.log").read_text()


def test_download_checks_the_checksum_and_unpacks(tmp_path, served):
    root, base = served
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        data = b"#!/bin/sh\necho tool\n"
        info = tarfile.TarInfo("tool-1.0/bin/tool")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    (root / "tool.tar.gz").write_bytes(payload.getvalue())
    good = file_digest(root / "tool.tar.gz")
    profile = tmp_path / "software.cfg"
    profile.write_text(f"[buildout]\nparts = tool\n[tool]\nrecipe = slapnode:download\n"
                       f"url = {base}/tool.tar.gz\nsha256 = {good}\nunpack = true\n")
    engine.build(str(profile), tmp_path / "sr")
    assert (tmp_path / "sr" / "parts" / "tool" / "bin" / "tool").read_bytes() == data
    bad = tmp_path / "bad.cfg"
    bad.write_text(profile.read_text().replace(good, "0" * 64))
    with pytest.raises(Exception, match="checksum mismatch"):
        engine.build(str(bad), tmp_path / "sr2", download_cache=tmp_path / "other-cache")


def make_cmmi_tarball(root):
    """A tiny autotools-shaped C project, and a patch for it."""
    buffer = io.BytesIO()
    files = {
        "greet-1.0/configure": ("#!/bin/sh\nprefix=/usr/local\nfor a in \"$@\"; do case $a in "
                                "--prefix=*) prefix=${a#--prefix=};; --greeting=*) g=${a#--greeting=};; esac; done\n"
                                "sed -e \"s|@PREFIX@|$prefix|\" -e \"s|@GREETING@|$g|\" Makefile.in > Makefile\n", 0o755),
        "greet-1.0/Makefile.in": ("PREFIX=@PREFIX@\nall: greet\ngreet: greet.c\n"
                                  "\t$(CC) -DGREETING='\"@GREETING@\"' -o greet greet.c\n"
                                  "install: greet\n\tmkdir -p $(PREFIX)/bin\n\tcp greet $(PREFIX)/bin/\n", 0o644),
        "greet-1.0/greet.c": ("#include <stdio.h>\nint main(void) { printf(\"%s from cmmi\\n\", GREETING); "
                              "return 0; }\n", 0o644),
    }
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, (text, mode) in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    (root / "greet-1.0.tar.gz").write_bytes(buffer.getvalue())
    (root / "loud.patch").write_text(
        "--- a/greet.c\n+++ b/greet.c\n@@ -1 +1 @@\n"
        "-#include <stdio.h>\n+#include <stdio.h> /* patched */\n")
    return file_digest(root / "greet-1.0.tar.gz"), file_digest(root / "loud.patch", "md5")


@needs_root
def test_cmmi_builds_a_tarball_served_on_loopback_as_the_software_user(tmp_path, served,
                                                                         software_user):
    root, base = served
    digest, patch_md5 = make_cmmi_tarball(root)
    profile = root / "software.cfg"
    profile.write_text(f"""[buildout]
parts = greet
[greet]
recipe = slapnode:cmmi
url = {base}/greet-1.0.tar.gz
sha256 = {digest}
configure-options = --greeting=hello
patches = ${{:_profile_base_location_}}/loud.patch#{patch_md5}
environment =
  CC=gcc
""")
    config = node_config(tmp_path, software_user)
    result = SoftwarePass(config).ensure(f"{base}/software.cfg")
    assert result.status == "available", (result.how, result.log_tail)
    directory = software_dir(config.software_root, f"{base}/software.cfg")
    binary = directory / "parts" / "greet" / "bin" / "greet"
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "hello from cmmi\n"
    owner = pwd.getpwnam(software_user).pw_uid
    for path in (directory, binary, directory / ".completed", directory / ".build.log"):
        assert path.stat().st_uid == owner        # never root
    assert "patch -p1 -i" in (directory / ".build.log").read_text()


@needs_root
def test_deb_unpacks_a_real_debian_package_and_its_dependencies(tmp_path, software_user):
    profile = tmp_path / "software.cfg"
    profile.write_text("[buildout]\nparts = hello\n[hello]\nrecipe = slapnode:deb\npackages = hello\n"
                       "[wrapper]\nbin = ${hello:bin-directory}\nlibs = ${hello:library-path}\n")
    installed_before = _dpkg_status("hello")
    config = node_config(tmp_path, software_user)
    result = SoftwarePass(config).ensure(str(profile))
    assert result.status == "available", (result.how, result.log_tail)
    directory = software_dir(config.software_root, str(profile))
    binary = directory / "parts" / "hello" / "usr" / "bin" / "hello"
    out = subprocess.run([binary], capture_output=True, text=True)
    assert out.stdout.strip() == "Hello, world!"
    assert _dpkg_status("hello") == installed_before          # never installed into the system
    unpacked = (directory / ".build.log").read_text().split("unpacked")[-1]
    assert "hello" in unpacked and "libc6" not in unpacked     # base system left out


def _dpkg_status(package):
    return subprocess.run(["dpkg-query", "-W", package], capture_output=True).returncode


@needs_root
def test_a_killed_build_resumes_after_the_last_finished_part(tmp_path, software_user):
    profile = tmp_path / "software.cfg"
    slow = tmp_path / "slow"
    profile.write_text(f"""[buildout]
parts = first second
[first]
recipe = slapnode:command
command = echo ran >> ${{buildout:directory}}/first.count
[second]
recipe = slapnode:command
command = [ -e {slow} ] && sleep 60; echo done > ${{buildout:directory}}/second.txt
""")
    slow.write_text("")
    config = node_config(tmp_path, software_user)
    directory = software_dir(config.software_root, str(profile))
    directory.mkdir(parents=True)
    entry = pwd.getpwnam(software_user)
    os.chown(directory, entry.pw_uid, entry.pw_gid)
    worker = subprocess.Popen([sys.executable, "-m", "slapnode.software.worker", "build",
                               str(profile), str(directory), str(tmp_path / "software" / "cache")],
                              user=entry.pw_uid, group=entry.pw_gid, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "first" not in _installed(directory) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    assert "first" in _installed(directory) and "second" not in _installed(directory)
    assert not (directory / ".completed").exists()
    slow.unlink()
    result = SoftwarePass(config).ensure(str(profile))
    assert result.status == "available", (result.how, result.log_tail)
    assert (directory / "first.count").read_text() == "ran\n"      # not run again
    assert (directory / "second.txt").read_text() == "done\n"


def _installed(directory):
    try:
        return json.loads((directory / ".installed.json").read_text())
    except (OSError, ValueError):
        return {}


def test_failed_builds_back_off(tmp_path):
    backoff = Backoff(tmp_path / "b.json")
    backoff.failed("u", now=1000)
    assert backoff.waiting("u", now=1010) and not backoff.waiting("u", now=1031)
    backoff.failed("u", now=1031)
    assert backoff.waiting("u", now=1031 + 59) and not backoff.waiting("u", now=1031 + 61)
    backoff.save()
    assert Backoff(tmp_path / "b.json").waiting("u", now=1031 + 59)
    backoff.succeeded("u")
    assert not backoff.waiting("u", now=0)


# -- the node's software pass with a master -------------------------------------------------

@needs_root
def test_node_software_builds_what_is_supplied_and_reports_it(master, make_node, tmp_path,
                                                               software_user, catalog_hello):
    node = make_node(partitions=1)
    master.client().supply(catalog_hello, node.name)
    config = node_config(tmp_path, software_user)
    results = SoftwarePass(config, node.client).run(node.client.desired_state())
    assert [(r.status, r.how) for r in results] == [("available", "built")]
    supplies = {s["node"]: s for s in master.client().show_software(catalog_hello)["supplies"]}
    assert supplies[node.name]["status"] == "available"
    assert "instance-profile" in supplies[node.name]["log_tail"]
    again = SoftwarePass(config, node.client).run(node.client.desired_state())
    assert [(r.status, r.how) for r in again] == [("available", "up to date")]
    master.client().supply(catalog_hello, node.name, state="destroyed")
    SoftwarePass(config, node.client).run(node.client.desired_state())
    assert not software_dir(config.software_root, catalog_hello).exists()
    assert all(s["node"] != node.name
               for s in master.client().show_software(catalog_hello)["supplies"])


@needs_root
def test_a_failed_build_is_reported_with_its_log(master, make_node, tmp_path, software_user,
                                                 served):
    root, base = served
    (root / "broken.cfg").write_text("[buildout]\nparts = a\n[a]\nrecipe = slapnode:command\n"
                                     "command = echo something went wrong; exit 7\n")
    url = f"{base}/broken.cfg"
    master.client().add_software(url, unique_name("broken"))
    node = make_node(partitions=1)
    master.client().supply(url, node.name)
    config = node_config(tmp_path, software_user)
    results = SoftwarePass(config, node.client).run(node.client.desired_state())
    assert results[0].status == "error" and "exit code 7" in results[0].how
    supply = master.client().show_software(url)["supplies"][0]
    assert supply["status"] == "error" and "something went wrong" in supply["log_tail"]
    assert not (software_dir(config.software_root, url) / ".completed").exists()
    waiting = SoftwarePass(config, node.client).run(node.client.desired_state())
    assert waiting[0].status == "waiting"           # backoff before the next try


@needs_root
def test_binary_cache_round_trip_between_two_software_roots(master, make_node, tmp_path,
                                                            software_user, catalog_hello):
    builder, volunteer = make_node(partitions=1), make_node(partitions=1)
    master.client().set_trusted(builder.name)
    shared_root = tmp_path / "shared-root"          # same path on both "machines"
    for node in (builder, volunteer):
        master.client().supply(catalog_hello, node.name)
    config = node_config(tmp_path, software_user)
    config.software_root = str(shared_root)
    shared_root.mkdir()
    entry = pwd.getpwnam(software_user)
    os.chown(shared_root, entry.pw_uid, entry.pw_gid)
    first = SoftwarePass(config, builder.client).run(builder.client.desired_state())
    assert [(r.status, r.how) for r in first] == [("available", "built")]
    directory = software_dir(shared_root, catalog_hello)
    digest = engine.completed_digest(directory)
    key = cache_key(catalog_hello, digest, shared_root)
    assert volunteer.client.cache_lookup(key)["digest"]
    import shutil
    shutil.rmtree(directory)                        # the second machine starts empty
    second = SoftwarePass(config, volunteer.client).run(volunteer.client.desired_state())
    assert [(r.status, r.how) for r in second] == [("available", "cache")]
    assert engine.completed_digest(directory) == digest
    assert (directory / "instance.cfg").stat().st_uid == entry.pw_uid


@needs_root
def test_an_untrusted_node_can_never_fill_the_cache(master, make_node, tmp_path):
    volunteer = make_node(partitions=1)
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(b"not really an archive")
    key = "a" * 64
    with pytest.raises(Exception) as info:
        volunteer.client.cache_upload(key, archive, file_digest(archive), "http://x/y.cfg", "x")
    assert getattr(info.value, "status", None) == 403
    assert volunteer.client.cache_lookup(key) is None


def test_software_build_command_for_release_authors(tmp_path):
    if os.geteuid() == 0:
        result = run_cli(["software", "build", HELLO, "--software-root", str(tmp_path)])
        assert result.exit_code == 2 and "--user" in result.stderr
    else:
        result = run_cli(["software", "build", HELLO, "--software-root", str(tmp_path)])
        assert result.exit_code == 0


@needs_root
def test_pip_makes_a_virtualenv_with_pinned_packages(tmp_path, software_user):
    profile = tmp_path / "software.cfg"
    profile.write_text("[buildout]\nparts = env\n[env]\nrecipe = slapnode:pip\n"
                       "packages = six==1.16.0\n")
    config = node_config(tmp_path, software_user)
    result = SoftwarePass(config).ensure(str(profile))
    assert result.status == "available", (result.how, result.log_tail)
    python = software_dir(config.software_root, str(profile)) / "parts" / "env" / "bin" / "python"
    out = subprocess.run([python, "-c", "import six; print(six.__version__)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "1.16.0"


def test_pip_refuses_unpinned_packages(tmp_path):
    profile = tmp_path / "software.cfg"
    profile.write_text("[buildout]\nparts = env\n[env]\nrecipe = slapnode:pip\npackages = six\n")
    with pytest.raises(Exception, match="pin every package as name==version: six"):
        engine.build(str(profile), tmp_path / "sr")


def test_unknown_recipe_lists_the_installed_ones(tmp_path):
    profile = tmp_path / "software.cfg"
    profile.write_text("[buildout]\nparts = a\n[a]\nrecipe = slapnode:teleport\n")
    with pytest.raises(Exception) as info:
        engine.build(str(profile), tmp_path / "sr")
    assert "unknown recipe 'slapnode:teleport'" in str(info.value)
    assert "slapnode:cmmi" in str(info.value) and "slapnode:deb" in str(info.value)


def test_plan_keeps_a_destroyed_release_while_a_partition_uses_it():
    from slapnode.software.supply import plan as software_plan
    doc = {"software": [{"url": "a", "state": "available"}, {"url": "b", "state": "destroyed"},
                        {"url": "c", "state": "destroyed"}],
           "partitions": [{"reference": "p0", "instance": {"software": "b"}},
                          {"reference": "p1", "instance": None}]}
    assert software_plan(doc) == (["a"], ["c"])


@needs_root
def test_node_software_and_software_build_commands(master, make_node, tmp_path, software_user,
                                                   catalog_hello):
    node = make_node(partitions=1)
    master.client().supply(catalog_hello, node.name)
    config = node_config(tmp_path, software_user, master=master.url,
                         credential=node.client.token, name=node.name)
    path = nodeconfig.save(config, tmp_path / "node.cfg")
    result = run_cli(["node", "software", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    assert [(r["status"], r["how"]) for r in json.loads(result.stdout)] == [("available", "built")]
    built = run_cli(["software", "build", HELLO, "--software-root", str(tmp_path / "author"),
                     "--user", software_user])
    assert built.exit_code == 0, built.stderr
    assert built.stdout.startswith("built ")
    again = run_cli(["software", "build", HELLO, "--software-root", str(tmp_path / "author"),
                     "--user", software_user])
    assert again.stdout.startswith("up to date")


@needs_root
def test_a_cache_archive_that_does_not_match_its_digest_is_built_instead(master, make_node, tmp_path,
                                                                         software_user, catalog_hello):
    builder, volunteer = make_node(partitions=1), make_node(partitions=1)
    master.client().set_trusted(builder.name)
    shared_root = tmp_path / "shared-root"
    for node in (builder, volunteer):
        master.client().supply(catalog_hello, node.name)
    config = node_config(tmp_path, software_user)
    config.software_root = str(shared_root)
    shared_root.mkdir()
    first = SoftwarePass(config, builder.client).run(builder.client.desired_state())
    assert [(r.status, r.how) for r in first] == [("available", "built")]
    directory = software_dir(shared_root, catalog_hello)
    key = cache_key(catalog_hello, engine.completed_digest(directory), shared_root)
    stored = master.data_dir / "cache" / f"{key}.tar.gz"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF                    # the master's copy is damaged
    stored.write_bytes(bytes(data))
    import shutil
    shutil.rmtree(directory)
    said = []
    second = SoftwarePass(config, volunteer.client, say=said.append).run(
        volunteer.client.desired_state())
    assert [(r.status, r.how) for r in second] == [("available", "built")]
    assert any("does not match its digest" in line for line in said)

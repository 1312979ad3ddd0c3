"""The deb recipe's other suite and relocation: apt sources parsed, the private apt
state's options and freshness, what relocation changes (pure), and a real
relocation of a small tree with Debian's patchelf (no root, no network)."""

import os
import shutil
import subprocess
import time

import pytest

from slapnode.recipes import apt, elf
from slapnode.recipes.packages import multiarch

DEB822 = """\
Types: deb
# a comment
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_sources_of_both_formats_are_read():
    found = apt.parse_sources(DEB822, deb822=True)
    assert [s.uri for s in found] == ["http://deb.debian.org/debian",
                                      "http://deb.debian.org/debian-security"]
    assert found[0].suites == ("bookworm", "bookworm-updates")
    assert found[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    legacy = apt.parse_sources(
        "# mirror\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main contrib\n"
        "deb-src http://mirror.example/debian bookworm main\n"
        "deb http://mirror.example/debian bookworm-updates main # updates\n", deb822=False)
    assert legacy[0] == apt.Source("http://mirror.example/debian", ("bookworm",),
                                   ("main", "contrib"), "/k.gpg")
    assert len(legacy) == 2


def test_the_other_suite_comes_from_the_archive_of_the_systems_own():
    sources = apt.parse_sources(DEB822, deb822=True)
    assert apt.archive_for(sources, "bookworm") == ("http://deb.debian.org/debian",
                                                    "/usr/share/keyrings/debian-archive-keyring.gpg")
    with pytest.raises(apt.AptError, match="no apt source serves trixie main"):
        apt.archive_for(sources, "trixie")
    assert apt.sources_line("http://a/debian", "trixie", "/k.gpg") == \
        "deb [signed-by=/k.gpg] http://a/debian trixie main\n"


def test_the_private_state_never_names_the_systems():
    options = " ".join(apt.options("/cache/apt/trixie"))
    assert "Dir::Etc::sourcelist=/cache/apt/trixie/sources.list" in options
    assert "Dir::Etc::sourceparts=-" in options and "Dir::State::status=/dev/null" in options
    assert "Dir::State::Lists=/cache/apt/trixie/lists" in options
    assert "/var/lib" not in options and "/etc/apt" not in options


@pytest.mark.parametrize("suite", ["Trixie", "../etc", "trixie main", "", "a" * 41])
def test_a_suite_must_look_like_one(tmp_path, suite):
    with pytest.raises(apt.AptError):
        apt.SuiteState(tmp_path, suite)


def test_lists_are_refreshed_when_missing_or_a_day_old(tmp_path):
    assert apt.stale(tmp_path, time.time())
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "deb.debian.org_debian_dists_trixie_main_binary-amd64_Packages").write_text("x")
    assert apt.stale(tmp_path, time.time())                     # never updated here
    (tmp_path / ".updated").write_text("")
    assert not apt.stale(tmp_path, time.time())
    assert apt.stale(tmp_path, time.time() + apt.MAX_AGE + 1)


def test_the_plan_changes_programs_and_libraries_but_never_the_c_library():
    files = {"usr/bin/a": elf.ElfInfo("/lib64/ld-linux-x86-64.so.2", True),
             "usr/lib/libx.so.1": elf.ElfInfo("", True),
             "usr/lib/x86_64-linux-gnu/libc.so.6": elf.ElfInfo("/lib64/ld-linux-x86-64.so.2", True),
             "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": elf.ElfInfo("", True),
             "usr/bin/static": elf.ElfInfo("", False)}
    programs, libraries = elf.plan(files, {"usr/lib/x86_64-linux-gnu/libc.so.6"},
                                   "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    assert programs == ["usr/bin/a"] and libraries == ["usr/lib/libx.so.1"]


def test_the_loaders_answer_is_read():
    listing = ("\tlinux-vdso.so.1 (0x00007ffd)\n"
               "\tlibx.so.1 => /r/usr/lib/libx.so.1 (0x1)\n"
               "\tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x2)\n"
               "\tlibgone.so.2 => not found\n"
               "\t/r/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 => /r/ld.so (0x3)\n")
    outside, missing = elf.resolution(listing, "/r")
    assert outside == [("libssl.so.3", "/lib/x86_64-linux-gnu/libssl.so.3")]
    assert missing == ["libgone.so.2"]
    assert elf.resolution("\tlibx.so => /rx/libx.so (0x1)\n", "/r")[0]   # /rx is not in /r


def test_elf_headers_are_read_without_running_anything(tmp_path):
    info = elf.read_info("/bin/true")
    assert info.dynamic and info.interpreter.endswith("ld-linux-x86-64.so.2")
    library = elf.read_info(os.path.realpath("/lib/x86_64-linux-gnu/liblzma.so.5"))
    assert library.dynamic and library.interpreter == ""
    (tmp_path / "script").write_text("#!/bin/sh\n")
    (tmp_path / "short").write_bytes(b"\x7fELF\x02\x01")
    assert elf.read_info(tmp_path / "script") is None and elf.read_info(tmp_path / "short") is None


def test_links_resolve_inside_the_tree_never_on_the_host(tmp_path):
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/real.so").write_text("")
    os.symlink("/usr/lib/real.so", tmp_path / "usr/lib/abs.so")        # absolute: the tree's
    os.symlink("../../etc/passwd", tmp_path / "usr/lib/up")
    os.symlink("/lib64", tmp_path / "lib64")
    assert elf.resolve_inside(tmp_path, "/usr/lib/abs.so") == "usr/lib/real.so"
    assert elf.resolve_inside(tmp_path, "usr/lib/up") is None          # not in the tree
    assert elf.resolve_inside(tmp_path, "/lib64/ld-linux-x86-64.so.2") is None


@pytest.mark.skipif(not shutil.which("patchelf"), reason="patchelf is missing (bash install.sh installs it)")
def test_a_relocated_program_loads_its_library_from_the_tree(tmp_path):
    """xz and its liblzma copied into a tree: after relocation xz runs from the tree
    with the tree's liblzma, with no LD_LIBRARY_PATH, and verify sees that."""
    arch = multiarch()
    libdir = tmp_path / "usr" / "lib" / arch
    libdir.mkdir(parents=True)
    (tmp_path / "usr" / "bin").mkdir()
    shutil.copy("/usr/bin/xz", tmp_path / "usr" / "bin" / "xz")
    shutil.copy(os.path.realpath(f"/lib/{arch}/liblzma.so.5"), libdir / "liblzma.so.5")
    programs, libraries, loader = elf.relocate(tmp_path, arch)
    assert programs == ["usr/bin/xz"] and libraries == [f"usr/lib/{arch}/liblzma.so.5"]
    assert loader == ""                                  # no C library here: the host's
    host = elf.host_loader(tmp_path, programs)
    listing = subprocess.run([host, "--list", str(tmp_path / "usr/bin/xz")], capture_output=True,
                             text=True, env={"PATH": "/usr/bin:/bin"}).stdout
    assert f"liblzma.so.5 => {libdir}/liblzma.so.5" in listing
    assert elf.verify(tmp_path, host, programs + libraries, inside_only=False) == {}
    with pytest.raises(elf.RelocationError, match="libc.so.6 from"):
        elf.verify(tmp_path, host, programs, inside_only=True)     # the host's libc is outside
    ran = subprocess.run([str(tmp_path / "usr/bin/xz"), "--version"], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0 and "liblzma" in ran.stdout


def test_absolute_links_point_into_the_tree_or_go(tmp_path):
    """A package's /etc/... link becomes relative to the tree (the binary cache refuses
    links that leave it, and the host's file is not the release's); one whose target the
    tree lacks is removed."""
    (tmp_path / "etc/blahp").mkdir(parents=True)
    (tmp_path / "etc/blahp/x.sh").write_text("#!/bin/sh\n")
    (tmp_path / "usr/libexec/blahp").mkdir(parents=True)
    os.symlink("/etc/blahp/x.sh", tmp_path / "usr/libexec/blahp/x.sh")
    os.symlink("/etc/passwd", tmp_path / "usr/libexec/blahp/host")
    os.symlink("x.sh", tmp_path / "usr/libexec/blahp/rel")
    rewritten, removed = elf.relative_links(tmp_path)
    assert rewritten == ["usr/libexec/blahp/x.sh"] and removed == ["usr/libexec/blahp/host"]
    assert os.readlink(tmp_path / "usr/libexec/blahp/x.sh") == "../../../etc/blahp/x.sh"
    assert (tmp_path / "usr/libexec/blahp/x.sh").read_text() == "#!/bin/sh\n"
    assert os.readlink(tmp_path / "usr/libexec/blahp/rel") == "x.sh"

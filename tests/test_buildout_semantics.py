"""Profiles mean what zc.buildout says they mean (issue 13, first part).

The expected values below were recorded from zc.buildout 6.0.1's own parser
(``zc.buildout.configparser.parse`` with buildout's ``_default_globals``) on the
same texts; the macro and ``+=`` cases follow ``_update_section`` and
``_do_extend_raw`` of the same version. Pure: nothing is built."""

import pytest

from slapnode.profile import conditions, expand, parser

RECORDED = {
    "script": ("[s]\ncommand =\n  #!/bin/sh\n  ; not a comment\n  echo hi\n",
               {"s": {"command": "#!/bin/sh\n; not a comment\necho hi"}}),
    "relative": ("[s]\ninit =\n  if True:\n      print(1)\n  x = 2\n",
                 {"s": {"init": "if True:\n    print(1)\nx = 2"}}),
    "blank": ("[s]\nv =\n  a\n\n  b\n\n\nw = 1\n", {"s": {"v": "a\n\nb", "w": "1"}}),
    "col0": ("[s]\nv = one\n# a comment\n  two\n", {"s": {"v": "one\ntwo"}}),
    "first": ("[s]\nv = first\n   second\n", {"s": {"v": "first\nsecond"}}),
    "mid": ("[s]\nv =\n  a\n  b\n", {"s": {"v": "a\nb"}}),
    "modes": ("[s]\nv = first\n  a\n\n    b\n  # c\nw =\n\n\n    x\n\n      y\n  \nz =\n",
              {"s": {"v": "first\na\nb\n# c", "w": "x\n\n  y", "z": ""}}),
    "cond": ("[a:python3]\nx = 1\n[b:python2]\ny = 2\n[c: sys.version_info >= (3, 0)]\nz = 3\n"
             "[d:linux and platform.machine() == 'x86_64']\nq = 4\n[e:bits64 and not windows]\nr = 5\n",
             {"a": {"x": "1"}, "c": {"z": "3"}, "d": {"q": "4"}, "e": {"r": "5"}}),
}


def parsed(text):
    sections, _ = parser.parse_text(text, "/p/t.cfg")
    return {name: {k: v.text for k, v in options.items()} for name, options in sections.items()
            if options}


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_a_file_reads_as_buildouts_parser_reads_it(case):
    text, expected = RECORDED[case]
    import platform

    if case == "cond" and platform.machine() != "x86_64":
        expected = {k: v for k, v in expected.items() if k != "d"}
    assert parsed(text) == expected


def profile(tmp_path, files, main="main.cfg"):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    raw = parser.load(str(tmp_path / main))
    return expand.Profile(raw, builtins={"buildout": {"directory": "/d"}})


def test_plus_equals_in_a_macro_section_adds_to_the_macros_value(tmp_path):
    p = profile(tmp_path, {"main.cfg": "[base]\npatches =\n  a.patch\n  b.patch\nurl = u\n"
                                       "[go]\n<= base\npatches +=\n  c.patch\n"})
    assert p.section("go")["patches"] == "a.patch\nb.patch\nc.patch"
    assert p.section("go")["url"] == "u"


def test_plus_equals_through_extends_keeps_blank_lines_and_minus_equals_removes(tmp_path):
    p = profile(tmp_path, {"base.cfg": "[s]\nv =\n  a\n\n  b\nw = x\n",
                           "main.cfg": "[buildout]\nextends = base.cfg\n[s]\nv +=\n  c\n"
                                       "w -= x\nnew += y\n[t]\nfresh += z\n"})
    section = p.section("s")
    assert section["v"] == "a\n\nb\nc"
    assert section["w"] == ""
    assert section["new"] == "\ny"            # a section below, no value: added to ''
    assert p.section("t")["fresh"] == "z"     # a new section: '+=' is an assignment


def test_a_value_substituted_mid_line_carries_no_newline(tmp_path):
    p = profile(tmp_path, {"main.cfg": "[x]\nflags =\n  --with-a\n[y]\ncmd = ./configure ${x:flags}\n"})
    assert p.section("y")["cmd"] == "./configure --with-a"


def test_buildouts_own_directories_exist(tmp_path):
    from slapnode.software import engine

    (tmp_path / "p.cfg").write_text("[s]\na = ${buildout:eggs-directory}\n"
                                    "b = ${buildout:develop-eggs-directory}\nc = ${buildout:executable}\n")
    p = engine.load_profile(str(tmp_path / "p.cfg"), tmp_path / "sr", tmp_path / "cache")
    section = p.section("s")
    assert section["a"] == f"{tmp_path}/sr/eggs" and section["b"] == f"{tmp_path}/sr/develop-eggs"
    assert section["c"].endswith("python") or "python" in section["c"]


@pytest.mark.parametrize("expression", ["__import__('os')", "open('/etc/passwd')",
                                        "sys.modules", "().__class__", "os.system('id')",
                                        "lambda: 1", "platform.machine.__globals__",
                                        "int.__subclasses__()", "nonexistent",
                                        "'x' in open('/proc/self/root/etc/passwd').read()"])
def test_conditions_outside_the_subset_are_refused_naming_file_and_line(expression):
    with pytest.raises(parser.ProfileError, match=r"/p/t\.cfg:2: "):
        parsed(f"[a]\n[b:{expression}]\nx = 1\n")


def test_conditions_buildout_profiles_use_are_understood():
    for expression in ("python3", "python311 or python312", "not python2",
                       "sys.version_info >= (3, 0)", "sys.version_info[0] == 3",
                       "platform.machine() in ('x86_64', 'aarch64')", "posix and bits64",
                       "re.match('x86', platform.machine()) is not None",
                       "sys.platform.startswith('linux')",
                       # as SlapOS writes them (liburing, poppler, gcc-common)
                       "[int(q) for q in platform.release().split('.')[:2]]<[4,14]",
                       "sys.version_info < (3, 10) or (platform.freedesktop_os_release()['ID'] "
                       "== 'debian' and int(platform.freedesktop_os_release()['VERSION_ID']) < 12)",
                       "os.path.isdir('/usr/lib/arm-linux-gnueabihf') and os.access("
                       "'/proc/device-tree/model', os.R_OK) and 'OLinuXino' in "
                       "open('/proc/device-tree/model').read()",
                       "'x86' in open('/proc/cpuinfo').read() or True"):
        assert isinstance(conditions.evaluate(expression), bool), expression
    assert conditions.evaluate("python3") is True and conditions.evaluate("python2") is False

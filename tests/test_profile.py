"""The buildout-style profile language: every syntax feature and every error."""

import http.server
import threading

import pytest

from slapnode.profile import expand, parser
from slapnode.profile.parser import ProfileError

BUILTINS = {"buildout": {"directory": "/sr", "parts-directory": "/sr/parts",
                         "bin-directory": "/sr/bin"}}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def profile(path, fetch=None):
    return expand.Profile(parser.load(str(path), fetch=fetch), builtins=BUILTINS)


def parts(path, fetch=None):
    return dict(profile(path, fetch).parts())


def test_sections_options_and_continuation_lines(tmp_path):
    path = write(tmp_path, "p.cfg", """
# a comment
[buildout]
parts = a

[a]
recipe = slapnode:mkdir
paths =
  /x
  /y
; another comment
name = value with = sign
""")
    a = parts(path)["a"]
    assert a["paths"].split() == ["/x", "/y"]
    assert a["name"] == "value with = sign"


def test_substitutions_between_and_within_sections(tmp_path):
    path = write(tmp_path, "p.cfg", """
[buildout]
parts = a
[settings]
port = 8080
host = 10.0.0.1
url = http://${:host}:${:port}/
[a]
recipe = slapnode:command
command = curl ${settings:url} > ${:location}/out
""")
    assert parts(path)["a"]["command"] == "curl http://10.0.0.1:8080/ > /sr/parts/a/out"


def test_dollar_dollar_passes_through_for_templates(tmp_path):
    path = write(tmp_path, "p.cfg", """
[buildout]
parts = a
[a]
recipe = slapnode:command
command = true
text = $${slap-configuration:ipv4} and ${:command}
""")
    assert parts(path)["a"]["text"] == "${slap-configuration:ipv4} and true"


def test_extends_relative_absolute_file_url_several_and_nested(tmp_path):
    write(tmp_path, "base/deep.cfg", "[a]\nfrom-deep = deep\nx = deep\n")
    write(tmp_path, "base/one.cfg", "[buildout]\nextends = deep.cfg\n[a]\nfrom-one = one\nx = one\n")
    absolute = write(tmp_path, "elsewhere/two.cfg", "[a]\nfrom-two = two\n")
    by_url = write(tmp_path, "elsewhere/three.cfg", "[a]\nfrom-three = three\n")
    top = write(tmp_path, "top.cfg", f"""
[buildout]
extends =
  base/one.cfg
  {absolute}
  file://{by_url}
parts = a
[a]
recipe = slapnode:command
command = true
""")
    a = parts(top)["a"]
    assert (a["from-deep"], a["from-one"], a["from-two"], a["from-three"]) == \
           ("deep", "one", "two", "three")
    assert a["x"] == "one"          # the extending file wins over what it extends


def test_extends_over_http(tmp_path):
    write(tmp_path, "srv/base.cfg", "[a]\nrecipe = slapnode:command\ncommand = remote\n")
    write(tmp_path, "srv/sub/top.cfg", "[buildout]\nextends = ../base.cfg\nparts = a\n[a]\nmore = yes\n")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "srv"), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        from slapnode.software.engine import fetch_url
        url = f"http://127.0.0.1:{server.server_port}/sub/top.cfg"
        a = parts(url, fetch=fetch_url)["a"]
        assert (a["command"], a["more"]) == ("remote", "yes")
        with pytest.raises(ProfileError, match="cannot fetch .*/nothing.cfg: HTTP 404"):
            profile(f"http://127.0.0.1:{server.server_port}/nothing.cfg", fetch=fetch_url)
    finally:
        server.shutdown()
        server.server_close()


def test_plus_and_minus_equal_change_what_was_extended(tmp_path):
    write(tmp_path, "base.cfg", "[buildout]\nparts =\n  a\n  b\n[a]\nrecipe = slapnode:command\n"
          "command = true\nflags =\n  -O2\n  -g\n[b]\nrecipe = slapnode:command\ncommand = true\n")
    top = write(tmp_path, "top.cfg", """
[buildout]
extends = base.cfg
parts -= b
parts += c
[a]
flags += -Wall
flags -= -g
[c]
recipe = slapnode:command
command = true
""")
    result = parts(top)
    assert list(result) == ["a", "c"]
    assert result["a"]["flags"].split() == ["-O2", "-Wall"]


def test_macros_take_the_new_sections_context(tmp_path):
    path = write(tmp_path, "p.cfg", """
[buildout]
parts = redis
[redis-macro]
recipe = slapnode:cmmi
url = http://example.org/redis-${:version}.tar.gz
make-options = PREFIX=${buildout:parts-directory}/${:_buildout_section_name_}
[redis]
<= redis-macro
version = 7.0
""")
    redis = parts(path)["redis"]
    assert redis["url"] == "http://example.org/redis-7.0.tar.gz"
    assert redis["make-options"] == "PREFIX=/sr/parts/redis"


def test_empty_recipe_disables_a_part(tmp_path):
    path = write(tmp_path, "p.cfg", """
[buildout]
parts = a b
[a]
recipe = slapnode:command
command = true
[b]
recipe =
""")
    assert list(parts(path)) == ["a"]


def test_referenced_parts_are_installed_first(tmp_path):
    path = write(tmp_path, "p.cfg", """
[buildout]
parts = app
[app]
recipe = slapnode:command
command = ${lib:location}/bin/tool ${data:value}
[lib]
recipe = slapnode:mkdir
[data]
value = 42
""")
    assert list(parts(path)) == ["lib", "app"]


def test_profile_base_location_is_the_defining_files_directory(tmp_path):
    write(tmp_path, "component/x/buildout.cfg",
          "[x]\nrecipe = slapnode:template\nurl = ${:_profile_base_location_}/x.in\noutput = /o\n")
    top = write(tmp_path, "software.cfg", "[buildout]\nextends = component/x/buildout.cfg\nparts = x\n")
    assert parts(top)["x"]["url"] == f"{tmp_path}/component/x/x.in"


def test_a_slapos_style_component_profile(tmp_path):
    """The shape of SlapOS's component profiles: extends of siblings, a macro,
    the section's own name, a patch next to the profile, += on parts."""
    write(tmp_path, "component/patch/buildout.cfg",
          "[patch]\nrecipe = slapnode:cmmi\nurl = http://example.org/patch-2.7.tar.gz\n"
          "sha256 = " + "0" * 64 + "\n")
    write(tmp_path, "component/redis/buildout.cfg", """[buildout]
extends =
  ../patch/buildout.cfg
parts =
  redis

[redis]
<= redis7

[redis7]
recipe = slapnode:cmmi
url = http://example.org/redis-7.0.15.tar.gz
sha256 = 1111111111111111111111111111111111111111111111111111111111111111
configure-command = true
make-options =
  PREFIX=${buildout:parts-directory}/${:_buildout_section_name_}
environment =
  PATH=${patch:location}/bin:/usr/bin:/bin
patches =
  ${:_profile_base_location_}/fix.patch#2222
""")
    software = write(tmp_path, "software/redis/software.cfg", """[buildout]
extends = ../../component/redis/buildout.cfg
parts +=
  instance-profile

[instance-profile]
recipe = slapnode:template
url = ${:_profile_base_location_}/instance.cfg.in
output = ${buildout:directory}/instance.cfg
""")
    result = parts(software)
    assert list(result) == ["patch", "redis", "instance-profile"]
    assert result["redis"]["make-options"].strip() == "PREFIX=/sr/parts/redis"
    assert result["redis"]["environment"].strip() == "PATH=/sr/parts/patch/bin:/usr/bin:/bin"
    assert result["redis"]["patches"].strip() == f"{tmp_path}/component/redis/fix.patch#2222"
    assert result["instance-profile"]["url"] == f"{tmp_path}/software/redis/instance.cfg.in"


# -- errors name the file and the line --------------------------------------------------

def error_of(path):
    with pytest.raises(ProfileError) as info:
        profile(path).parts()
    return str(info.value)


def test_unknown_section_in_a_substitution(tmp_path):
    path = write(tmp_path, "p.cfg", "[buildout]\nparts = a\n[a]\nrecipe = slapnode:command\n"
                                     "command = ${nowhere:x}\n")
    assert error_of(path) == f"{path}:5: ${{nowhere:x}}: no section [nowhere]"


def test_unknown_option_in_a_substitution(tmp_path):
    path = write(tmp_path, "p.cfg", "[buildout]\nparts = a\n[a]\nrecipe = slapnode:command\n"
                                     "command = ${:nope}\n")
    assert error_of(path) == f"{path}:5: ${{a:nope}}: section [a] has no option 'nope'"


def test_substitution_cycle(tmp_path):
    path = write(tmp_path, "p.cfg", "[buildout]\nparts = a\n[a]\nrecipe = slapnode:command\n"
                                     "command = ${:x}\nx = ${:y}\ny = ${:x}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:") and "substitution cycle" in message
    assert "${a:x} -> ${a:y} -> ${a:x}" in message


def test_extends_loop(tmp_path):
    write(tmp_path, "a.cfg", "[buildout]\nextends = b.cfg\n")
    write(tmp_path, "b.cfg", "[buildout]\nextends = a.cfg\n")
    with pytest.raises(ProfileError, match=r"extends loop: .*a\.cfg -> .*b\.cfg -> .*a\.cfg"):
        parser.load(str(tmp_path / "a.cfg"))


def test_unreachable_extends(tmp_path):
    path = write(tmp_path, "p.cfg", "[buildout]\nextends = missing.cfg\n")
    with pytest.raises(ProfileError, match=r"cannot read .*missing\.cfg: No such file"):
        parser.load(str(path))


@pytest.mark.parametrize("text, line", [
    ("[buildout]\nparts = a\n[a\n", 3),
    ("[buildout]\nthis is not an option\n", 2),
    ("  indented = before any option\n", 1),
    ("orphan = outside a section\n", 1),
])
def test_syntax_errors_name_the_line(tmp_path, text, line):
    path = write(tmp_path, "p.cfg", text)
    with pytest.raises(ProfileError) as info:
        parser.load(str(path))
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_macro_of_a_missing_section(tmp_path):
    path = write(tmp_path, "p.cfg", "[buildout]\nparts = a\n[a]\n<= nothing\n")
    assert error_of(path) == f"{path}:4: [a] <= nothing: no section [nothing]"


def test_a_part_without_a_section(tmp_path):
    path = write(tmp_path, "p.cfg", "[buildout]\nparts = ghost\n")
    assert "part 'ghost' has no section [ghost]" in error_of(path)


def test_digest_changes_with_any_expanded_option(tmp_path):
    path = write(tmp_path, "p.cfg", "[buildout]\nparts = a\n[a]\nrecipe = slapnode:command\n"
                                     "command = echo ${v:x}\n[v]\nx = 1\n")
    first = profile(path).digest()
    assert profile(path).digest() == first
    path.write_text(path.read_text().replace("x = 1", "x = 2"))
    assert profile(path).digest() != first

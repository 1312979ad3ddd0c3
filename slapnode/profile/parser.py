"""The buildout-style profile language: reading files and expanding values.

Owns the syntax that real SlapOS profiles use: INI sections and options with
continuation lines; ``extends`` (relative and absolute paths, ``file://`` and
``http(s)://`` URLs, several, nested, loops refused); ``+=`` and ``-=`` on
what an extended file defined; ``<=`` macros; ``${section:option}`` and
``${:option}``; ``$${...}`` kept as a literal ``${...}`` (for templates);
``${:_profile_base_location_}`` (the directory or URL of the file an option
was written in). Every error names the file and the line.

It is ours rather than zc.buildout's: zc.buildout's parser cannot be used
without its whole Buildout machinery (eggs, setuptools, its own recipes and
their install order), and we need file-and-line errors and a profile that is
fully expanded, and so checked, before anything is built (docs/decisions.md).
"""

import os
import re
import urllib.parse
from dataclasses import dataclass, field

from ..errors import SlapnodeError

SECTION_RE = re.compile(r"^\[\s*([^\]\s:]+)\s*\]\s*(?:[#;].*)?$")
OPTION_RE = re.compile(r"^([^\s=+\-<][^=]*?|<)\s*(\+=|-=|=)(.*)$")
SUBST_RE = re.compile(r"\$\{([^}:\s]*):([^}\s]+)\}")
ESCAPED = "\x00ESCAPED\x00"
MAX_EXTENDS_DEPTH = 32


class ProfileError(SlapnodeError):
    """A profile that cannot be read or expanded. The message names file and line."""


@dataclass
class Value:
    text: str
    where: str                      # "file:line"
    op: str = "="                   # "=", "+=", "-="
    chain: list = None              # several += / -= on one option in one file, in order
    given: bool = False             # text the agent gave (parameters): data, never source

    def operations(self):
        return self.chain or [(self.op, self.text)]


@dataclass
class RawProfile:
    """Sections -> options -> Value, after extends are merged (no substitution yet)."""

    sections: dict = field(default_factory=dict)
    section_where: dict = field(default_factory=dict)
    files: list = field(default_factory=list)


def _base_of(location):
    if "://" in location:
        return location.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(location))


def _join(base, ref):
    if "://" in ref or os.path.isabs(ref):
        return ref
    if "://" in base:
        return urllib.parse.urljoin(base + "/", ref)
    return os.path.normpath(os.path.join(base, ref))


def read_location(location, fetch):
    """Text of a profile given by path or URL. ``fetch(url) -> bytes`` for http(s)."""
    if location.startswith("file://"):
        location = urllib.parse.urlparse(location).path
    if "://" in location:
        try:
            data = fetch(location)
        except Exception as exc:        # the fetcher says why in one line
            raise ProfileError(f"cannot fetch {location}: {exc}") from None
        return data.decode("utf-8")
    try:
        with open(location, encoding="utf-8") as stream:
            return stream.read()
    except OSError as exc:
        raise ProfileError(f"cannot read {location}: {exc.strerror}") from None


def parse_text(text, location):
    """One file -> {section: {option: Value}}, in file order."""
    sections = {}
    where_sections = {}
    current = None
    last = None             # (section, option) for continuation lines
    base = _base_of(location)
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{location}:{number}"
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            if not stripped:
                last = None if current is None else last
            continue
        if line[0] in " \t":
            if last is None:
                raise ProfileError(f"{where}: indented line outside an option")
            value = sections[last[0]][last[1]]
            value.text += "\n" + stripped.replace("${:_profile_base_location_}", base)
            continue
        match = SECTION_RE.match(line)
        if match:
            current = match.group(1)
            sections.setdefault(current, {})
            where_sections.setdefault(current, where)
            last = None
            continue
        if line.lstrip().startswith("["):
            raise ProfileError(f"{where}: syntax error in section header {stripped!r}")
        match = OPTION_RE.match(line)
        if not match or current is None:
            raise ProfileError(f"{where}: syntax error: expected 'option = value'"
                               + ("" if current else " inside a [section]"))
        name, op, value = match.group(1).strip(), match.group(2), match.group(3).strip()
        value = value.replace("${:_profile_base_location_}", base)
        earlier = sections[current].get(name)
        if earlier is not None and op != "=":
            if earlier.op == "=":       # += / -= on a value this same file set: apply now
                sections[current][name] = Value(_apply(earlier.text, op, value), where)
            else:
                earlier.chain = earlier.operations() + [(op, value)]
        else:
            sections[current][name] = Value(value, where, op)
        last = (current, name)
    return sections, where_sections


def load(location, fetch=None, _stack=()):
    """Read ``location`` and everything it extends into one RawProfile."""
    if location in _stack:
        chain = " -> ".join(list(_stack) + [location])
        raise ProfileError(f"extends loop: {chain}")
    if len(_stack) > MAX_EXTENDS_DEPTH:
        raise ProfileError(f"{location}: extends nested deeper than {MAX_EXTENDS_DEPTH}")
    text = read_location(location, fetch)
    sections, where_sections = parse_text(text, location)
    merged = RawProfile()
    extends = sections.get("buildout", {}).pop("extends", None)
    if extends is not None:
        for ref in extends.text.split():
            parent = load(_join(_base_of(location), ref), fetch, _stack + (location,))
            _merge(merged, parent)
    merged.files.append(location)
    own = RawProfile(sections, where_sections, [])
    _merge(merged, own)
    return merged


def _merge(into, other):
    """Lay ``other`` over ``into``: '=' replaces, '+=' appends lines, '-=' removes lines."""
    for name, options in other.sections.items():
        target = into.sections.setdefault(name, {})
        into.section_where.setdefault(name, other.section_where.get(name, ""))
        for option, value in options.items():
            base = target.get(option)
            text = base.text if base is not None else None
            for op, operand in value.operations():
                text = operand if op == "=" else _apply(text or "", op, operand)
            target[option] = Value(text, value.where)
    into.files.extend(f for f in other.files if f not in into.files)


def _apply(base, op, operand):
    """'+=' appends lines to ``base``; '-=' removes the lines of ``operand`` from it."""
    if op == "+=":
        return "\n".join(l for l in base.splitlines() + operand.splitlines() if l.strip())
    removed = {l.strip() for l in operand.splitlines()}
    return "\n".join(l for l in base.splitlines() if l.strip() and l.strip() not in removed)

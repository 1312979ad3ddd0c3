"""The buildout-style profile language: reading files and expanding values.

Owns the syntax that real SlapOS profiles use: INI sections and options with
continuation lines; ``extends`` (relative and absolute paths, ``file://`` and
``http(s)://`` URLs, several, nested, loops refused); ``+=`` and ``-=`` on
what an extended file defined; ``<=`` macros; ``${section:option}`` and
``${:option}``; ``$${...}`` kept as a literal ``${...}`` (for templates);
``${:_profile_base_location_}`` (the directory or URL of the file an option
was written in); conditional section headers (``conditions``); values read as
zc.buildout 6 reads them (comments in column 0 only, common indentation removed,
blank lines kept inside). Every error names the file and the line.

It is ours rather than zc.buildout's: zc.buildout's parser cannot be used
without its whole Buildout machinery (eggs, setuptools, its own recipes and
their install order), and we need file-and-line errors and a profile that is
fully expanded, and so checked, before anything is built (docs/decisions.md).
"""

import os
import re
import textwrap
import urllib.parse
from dataclasses import dataclass, field

from ..errors import SlapnodeError
from . import conditions

SECTION_RE = re.compile(r"^\[\s*([^\s#\[\]:;{}]+)\s*(?::([^#;]*))?\s*\]\s*(?:[#;].*)?$")
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

    @property
    def pending(self):
        """'+=' / '-=' still waiting for the value they apply to (a macro's)."""
        return self.op != "="


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


def _finish(value, first, lines):
    """An option's text as zc.buildout makes it. With text after ``=``, the continuation
    lines are stripped and blank ones dropped. With nothing after ``=`` (a block), they
    keep their indentation and blank lines: the block loses its common indentation (the
    relative one stays), its leading blank lines and its trailing whitespace."""
    if first:
        value.text = "\n".join([first] + [line.strip() for line in lines if line.strip()])
        return
    block = textwrap.dedent("\n" + "\n".join(line.rstrip() for line in lines).rstrip())
    value.text = re.sub(r"^(\s*\n)+", "", block)


def parse_text(text, location):
    """One file -> {section: {option: Value}}, in file order.

    As zc.buildout: comments are lines starting with ``#`` or ``;`` in column 0
    (an indented one is part of a value); a section header may carry a condition
    (``[name:python3]``, ``[name:linux and platform.machine() == 'x86_64']``): a false
    one drops the section's lines; a section may appear twice (merged)."""
    sections = {}
    where_sections = {}
    current = None
    skipping = False        # inside a section whose condition is false
    open_value = None       # (Value, first line text, continuation lines)
    base = _base_of(location)

    def close():
        nonlocal open_value
        if open_value is not None:
            _finish(*open_value)
            value = open_value[0]
            value.text = value.text.replace("${:_profile_base_location_}", base)
            if value.chain:
                value.chain[-1] = (value.chain[-1][0], value.text)
            open_value = None

    for number, line in enumerate(text.splitlines(), 1):
        where = f"{location}:{number}"
        stripped = line.strip()
        if line[:1] in ("#", ";"):
            continue                        # a comment (column 0 only)
        if not stripped:
            if open_value is not None:
                open_value[2].append("")
            continue
        if line[0] in " \t":
            if skipping:
                continue
            if open_value is None:
                raise ProfileError(f"{where}: indented line outside an option")
            open_value[2].append(line.rstrip())
            continue
        close()
        match = SECTION_RE.match(line)
        if match:
            name, condition = match.group(1), match.group(2)
            skipping = False
            if condition is not None and condition.strip():
                try:
                    skipping = not conditions.evaluate(condition)
                except conditions.ConditionError as exc:
                    raise ProfileError(f"{where}: {exc}") from None
            if skipping:
                current = None
                continue
            current = name
            sections.setdefault(current, {})
            where_sections.setdefault(current, where)
            continue
        if line.lstrip().startswith("["):
            raise ProfileError(f"{where}: syntax error in section header {stripped!r}")
        if skipping:
            continue
        match = OPTION_RE.match(line)
        if not match or current is None:
            raise ProfileError(f"{where}: syntax error: expected 'option = value'"
                               + ("" if current else " inside a [section]"))
        name, op, first = match.group(1).strip(), match.group(2), match.group(3).strip()
        earlier = sections[current].get(name)
        if earlier is not None and op != "=":
            if earlier.op == "=" and not earlier.chain:
                # += / -= on a value this same file set: applied when the value is read
                value = Value("", where, "=", chain=[("=", earlier.text), (op, "")])
            else:
                value = Value("", where, earlier.op, chain=earlier.operations() + [(op, "")])
            sections[current][name] = value
        else:
            value = Value("", where, op)
            sections[current][name] = value
        open_value = (value, first, [])
    close()
    for options in sections.values():
        for name, value in list(options.items()):
            if value.chain and value.chain[0][0] == "=":
                text = value.chain[0][1]
                for op, operand in value.chain[1:]:
                    text = _apply(text, op, operand)
                options[name] = Value(text, value.where)
    return sections, where_sections


def load(location, fetch=None, _stack=(), _loaded=None):
    """Read ``location`` and everything it extends into one RawProfile.

    A file extended along several paths (SlapOS's components extend each other as a
    diamond: stack/slapos.cfg reaches some files hundreds of times) is laid over again
    each time, as buildout does, but read and merged only once (``_loaded``: what each
    file and its extends make; _merge never changes what it lays over)."""
    if location in _stack:
        chain = " -> ".join(list(_stack) + [location])
        raise ProfileError(f"extends loop: {chain}")
    if len(_stack) > MAX_EXTENDS_DEPTH:
        raise ProfileError(f"{location}: extends nested deeper than {MAX_EXTENDS_DEPTH}")
    if _loaded is None:
        _loaded = {}
    elif location in _loaded:
        return _loaded[location]
    text = read_location(location, fetch)
    sections, where_sections = parse_text(text, location)
    merged = RawProfile()
    extends = sections.get("buildout", {}).pop("extends", None)
    if extends is not None:
        for ref in extends.text.split():
            parent = load(_join(_base_of(location), ref), fetch, _stack + (location,), _loaded)
            _merge(merged, parent)
    merged.files.append(location)
    own = RawProfile(sections, where_sections, [])
    _merge(merged, own)
    _loaded[location] = merged
    return merged


def _merge(into, other):
    """Lay ``other`` over ``into`` as zc.buildout does: '=' replaces; '+=' adds lines and
    '-=' removes them from the value below, or from an empty one in a section that
    exists below; in a new section '+=' is an assignment, except in a section made
    with ``<=``, where the operations wait for the macro's value (``pending``)."""
    for name, options in other.sections.items():
        existed = name in into.sections
        target = into.sections.setdefault(name, {})
        into.section_where.setdefault(name, other.section_where.get(name, ""))
        macro = "<" in options or "<" in target
        for option, value in options.items():
            base = target.get(option)
            operations = value.operations()
            if operations[0][0] != "=" and (base is None or base.pending):
                earlier = base.operations() if base is not None else []
                if macro:
                    target[option] = Value("", value.where, operations[0][0],
                                           chain=earlier + operations)
                    continue
                if base is None and not existed and operations[0][0] == "+=":
                    operations = [("=", operations[0][1])] + operations[1:]
                else:
                    operations = earlier + operations
            target[option] = Value(resolve(base.text if base is not None and not base.pending
                                           else "", operations), value.where)
    into.files.extend(f for f in other.files if f not in into.files)


def resolve(text, operations):
    """``text`` with the operations ('=', '+=', '-=') applied in order."""
    for op, operand in operations:
        text = operand if op == "=" else _apply(text, op, operand)
    return text


def _apply(base, op, operand):
    """'+=' adds the operand's lines after ``base``'s; '-=' removes from ``base`` the
    lines equal to one of the operand's. Blank lines are kept, as buildout keeps them."""
    if op == "+=":
        return "\n".join(base.split("\n") + operand.split("\n"))
    removed = set(operand.split("\n"))
    return "\n".join(line for line in base.split("\n") if line not in removed)

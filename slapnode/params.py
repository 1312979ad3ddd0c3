"""Instance parameters: SlapOS XML <-> dict, and KEY=VALUE pairs.

Owns the two SlapOS XML forms, so that users' existing files work unchanged:

* plain:        ``<instance><parameter id="k">v</parameter>...</instance>``
* JSON-in-XML:  ``<instance><parameter id="_">{"k": ...}</parameter></instance>``

Parsing is hardened: no DTD, no entity resolution, no network, a size bound,
and a strict shape. Every refusal is one line (:class:`ParameterError`).
"""

import functools
import json

from .errors import ParameterError

MAX_BYTES = 256 * 1024          # a parameter document larger than this is refused
MAX_PARAMETERS = 1000
JSON_KEY = "_"


@functools.lru_cache(maxsize=None)
def _xml():
    """lxml and the hardened parser, loaded at the first XML document: whoever handles
    only KEY=VALUE pairs or JSON (the CLI's requests, a master's workers that never see
    XML) does not pay for lxml (20 ms and 6 MB)."""
    from lxml import etree

    return etree, etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _check_size(data):
    if len(data) > MAX_BYTES:
        raise ParameterError(
            f"parameters are {len(data)} bytes, more than the {MAX_BYTES} allowed; "
            "keep large data out of parameters")


def parse_xml(data, source="parameters"):
    """Parse a SlapOS parameter document (bytes or str) into a dict.

    The plain form gives ``{id: text}`` (strings); the JSON-in-XML form gives the
    JSON object it holds. Raises :class:`ParameterError` with one line.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    _check_size(data)
    if not data.strip():
        raise ParameterError(f"{source}: empty document; expected <instance>...</instance>")
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise ParameterError(f"{source}: DOCTYPE and entity declarations are not allowed")
    etree, parser = _xml()
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise ParameterError(f"{source}: malformed XML: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise ParameterError(f"{source}: DOCTYPE declarations are not allowed")
    if root.tag != "instance":
        raise ParameterError(f"{source}: the root element must be <instance>, not <{root.tag}>")
    result = {}
    children = list(root)
    if len(children) > MAX_PARAMETERS:
        raise ParameterError(f"{source}: more than {MAX_PARAMETERS} parameters")
    for child in children:
        if not isinstance(child.tag, str):      # entity references left unresolved
            raise ParameterError(f"{source}: entity references are not allowed")
        where = f"{source}, line {child.sourceline}"
        if child.tag != "parameter":
            raise ParameterError(f"{where}: unexpected <{child.tag}>; only <parameter id=...> is allowed")
        key = child.get("id")
        if not key:
            raise ParameterError(f"{where}: <parameter> without an id attribute")
        if len(child):
            raise ParameterError(f"{where}: parameter {key!r} must hold text, not elements")
        if key in result:
            raise ParameterError(f"{where}: parameter {key!r} is given twice")
        result[key] = child.text or ""
    if JSON_KEY in result:
        if len(result) != 1:
            raise ParameterError(
                f"{source}: the JSON form holds a single <parameter id=\"_\">; found other parameters too")
        return parse_json(result[JSON_KEY], source=f"{source} (parameter _)")
    return result


def parse_json(data, source="parameters"):
    """Parse a JSON object of parameters. Refuses anything but an object."""
    if isinstance(data, bytes):
        _check_size(data)
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ParameterError(f"{source}: not UTF-8 text") from None
    else:
        _check_size(data.encode("utf-8"))
    def refuse(name):
        raise ParameterError(f"{source}: {name} is not a JSON number; give a number or text")
    try:
        value = json.loads(data, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise ParameterError(f"{source}: invalid JSON: {exc}") from None
    except RecursionError:
        raise ParameterError(f"{source}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise ParameterError(f"{source}: expected a JSON object, got {type(value).__name__}")
    return value


def parse_pairs(pairs):
    """``["k=v", ...]`` -> dict. A missing ``=`` or a repeated key is an error."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParameterError(f"--parameter {pair!r}: expected KEY=VALUE")
        if key in result:
            raise ParameterError(f"--parameter {key!r} is given twice")
        result[key] = value
    return result


def is_plain(params):
    """True when every value is a string, so the plain XML form can hold it."""
    return all(isinstance(v, str) for v in params.values())


def to_xml(params, force_json=False):
    """dict -> SlapOS XML (str). Plain form when it can, JSON-in-XML otherwise."""
    etree, _ = _xml()
    root = etree.Element("instance")
    if force_json or not is_plain(params) or JSON_KEY in params:
        element = etree.SubElement(root, "parameter", id=JSON_KEY)
        element.text = json.dumps(params, sort_keys=True)
    else:
        for key in sorted(params):
            element = etree.SubElement(root, "parameter", id=key)
            element.text = params[key]
    return etree.tostring(root, xml_declaration=True, encoding="utf-8",
                          pretty_print=True).decode("utf-8")

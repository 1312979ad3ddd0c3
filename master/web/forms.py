"""The request form of a release: its fields from the release's JSON Schema, and
the two ways between the form's values and instance parameters (pure).

Owns which widget each schema property gets (enums as selects, booleans as
checkboxes, numbers with their bounds, objects and arrays as JSON text), how the
posted values become parameters (the plain SlapOS form, strings, whenever it can;
the JSON-in-XML form when a value is structured), and how parameters, for example
from a pasted SlapOS XML file, fill the form again. The master's schema check is
the only validation: this module never decides that a value is acceptable.
"""

import json
from dataclasses import dataclass, field

from slapnode import params as xmlparams
from slapnode.errors import ParameterError

TRUE = {"true", "1", "yes", "on"}


@dataclass
class Field:
    name: str
    kind: str                   # text | textarea | number | integer | checkbox | select | json
    label: str
    help: str = ""
    default: object = None
    options: list = field(default_factory=list)
    minimum: object = None
    maximum: object = None
    max_length: int | None = None
    required: bool = False

    @property
    def input_id(self):
        return "p-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in self.name)

    @property
    def default_text(self):
        return _text(self.default) if self.default is not None else ""


def _text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _kind(spec):
    kinds = spec.get("type")
    kinds = [k for k in (kinds if isinstance(kinds, list) else [kinds]) if k != "null"]
    kind = kinds[0] if kinds else None
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        return "select"
    if kind == "boolean":
        return "checkbox"
    if kind in ("number", "integer"):
        return kind
    if kind in ("object", "array"):
        return "json"
    if kind == "string" and (spec.get("maxLength") or 0) > 400 or spec.get("format") == "textarea":
        return "textarea"
    return "text"


def fields_of(schema):
    """The form's fields, in the schema's order."""
    if not isinstance(schema, dict):
        return []
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    required = set(schema.get("required") or []) if isinstance(schema.get("required"), list) else set()
    result = []
    for name, spec in properties.items():
        if not isinstance(spec, dict):
            spec = {}
        bound = lambda key: spec.get(key) if isinstance(spec.get(key), (int, float)) \
            and not isinstance(spec.get(key), bool) else None
        result.append(Field(
            name=name, kind=_kind(spec),
            label=str(spec.get("title") or name),
            help=str(spec.get("description") or ""),
            default=spec.get("default"),
            options=[_text(v) for v in spec["enum"]] if isinstance(spec.get("enum"), list) else [],
            minimum=bound("minimum"), maximum=bound("maximum"),
            max_length=spec.get("maxLength") if isinstance(spec.get("maxLength"), int) else None,
            required=name in required))
    return result


class FormError(ValueError):
    """Values that cannot even be made into parameters: {field: message}."""

    def __init__(self, fields):
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def params_from_form(fields, values):
    """Posted values ({field name: text}; a checked box sends a value, an unchecked one
    nothing) -> parameters. Empty fields are left out, so the release's defaults apply;
    an unchecked box is sent as false only when its default is true."""
    plain, typed, errors, structured = {}, {}, {}, False
    for item in fields:
        raw = values.get(item.name)
        if item.kind == "checkbox":
            checked = raw is not None and str(raw).lower() in TRUE
            if checked or item.default is True:
                plain[item.name], typed[item.name] = _text(checked), checked
            continue
        text = "" if raw is None else str(raw)
        if item.kind != "textarea":
            text = text.strip()
        if text == "":
            continue
        plain[item.name] = text
        if item.kind == "json":
            structured = True
            try:
                typed[item.name] = json.loads(text)
            except ValueError as exc:
                errors[item.name] = f"not valid JSON ({exc.msg}, column {exc.colno})"
        elif item.kind in ("number", "integer"):
            try:
                typed[item.name] = int(text) if item.kind == "integer" else float(text)
            except ValueError:
                typed[item.name] = text          # the master names the error
        else:
            typed[item.name] = text
    if errors:
        raise FormError(errors)
    return typed if structured else plain


def form_from_params(fields, params):
    """Parameters -> ({field name: text or bool}, [names of parameters the form has no
    field for]). A field the parameters do not set shows its default."""
    values = {}
    for item in fields:
        value = params.get(item.name, item.default)
        if item.kind == "checkbox":
            values[item.name] = value is True or (isinstance(value, str) and value.lower() in TRUE)
        else:
            values[item.name] = "" if value is None else _text(value)
    known = {f.name for f in fields}
    return values, sorted(k for k in params if k not in known)


def to_xml(parameters):
    """The SlapOS XML of parameters (``<instance></instance>`` when there are none)."""
    if not parameters:
        return "<instance></instance>"
    text = xmlparams.to_xml(parameters)
    return text.split("?>", 1)[1].strip() if text.startswith("<?xml") else text.strip()


def from_xml(text):
    """Parameters from SlapOS XML (either form); raises ParameterError."""
    return xmlparams.parse_xml(text or "", source="Parameter XML")


def choose(values, fields, xml, xml_shown, source):
    """The parameters a request form stands for. ``source`` says which side the user
    edited last (set by the page's script); without the script, the XML wins when it
    differs from what the page showed, and the form otherwise."""
    if source not in ("form", "xml"):
        source = "xml" if (xml or "").strip() != (xml_shown or "").strip() else "form"
    if source == "xml":
        return from_xml(xml), "xml"
    return params_from_form(fields, values), "form"


__all__ = ["Field", "FormError", "ParameterError", "choose", "fields_of", "form_from_params",
           "from_xml", "params_from_form", "to_xml"]

"""The software release catalog and parameter checking.

Owns what a catalog entry may be (URL, title, price, schema), how a SOFTWARE
argument (a URL or a title) names one, and the check of instance parameters
against a release's JSON Schema, naming each bad field.
"""

import re
from decimal import Decimal, InvalidOperation

import jsonschema
from sqlalchemy import or_, select

from .errors import BadRequest, Conflict, Invalid, NotFound
from .models import SoftwareRelease

URL_RE = re.compile(r"^(https?://[^\s/]+/\S*|file:///\S+|/\S+)$")


def parse_price(text):
    """'4.99' -> 499 cents. Refuses negatives and more than two decimals."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise BadRequest(f"price {text!r} is not a number; give euros per month, e.g. 4.99") from None
    if not value.is_finite() or value < 0:
        raise BadRequest(f"price {text!r} must be zero or more")
    cents = value * 100
    if cents != cents.to_integral_value():
        raise BadRequest(f"price {text!r} has more than two decimals")
    if cents > 10**9:
        raise BadRequest(f"price {text!r} is too large")
    return int(cents)


def check_schema(schema):
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise BadRequest("the parameter schema must be a JSON object")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BadRequest(f"the parameter schema is not valid JSON Schema: {exc.message}") from None


def add(session, url, title, description="", price="0", schema=None):
    url = url.strip()
    title = title.strip()
    if not URL_RE.match(url):
        raise BadRequest(f"software URL {url!r} must be http(s)://..., file:///... or an absolute path")
    if not title:
        raise BadRequest("a software release needs a non-empty --title")
    check_schema(schema)
    clash = session.scalars(select(SoftwareRelease).where(
        or_(SoftwareRelease.url == url, SoftwareRelease.title == title,
            SoftwareRelease.url == title, SoftwareRelease.title == url))).first()
    if clash is not None:
        raise Conflict(f"the catalog already has {clash.title!r} ({clash.url}); pick another URL and title")
    release = SoftwareRelease(url=url, title=title, description=description or "",
                              price_cents=parse_price(price), parameter_schema=schema)
    session.add(release)
    session.flush()
    return release


def lookup(session, ref):
    """The catalog entry whose URL or title is ``ref``, or None."""
    return session.scalars(select(SoftwareRelease).where(
        or_(SoftwareRelease.url == ref, SoftwareRelease.title == ref))).first()


def require(session, ref):
    release = lookup(session, ref)
    if release is None:
        raise NotFound(f"unknown software {ref!r}: it is neither a catalog URL nor a catalog title; "
                       "see `slapnode software list`")
    return release


def view(release, supplies=None):
    result = {
        "url": release.url,
        "title": release.title,
        "description": release.description,
        "price_per_month": f"{release.price_cents / 100:.2f}",
        "currency": "EUR",
        "has_schema": release.parameter_schema is not None,
    }
    if supplies is not None:
        result["schema"] = release.parameter_schema
        result["supplies"] = supplies
    return result


_COERCE = {
    "integer": lambda s: int(s),
    "number": lambda s: float(s),
    "boolean": lambda s: {"true": True, "false": False, "1": True, "0": False}[s.strip().lower()],
}


def _coerced(params, schema):
    """The plain XML form carries only strings: read them as the schema's types."""
    properties = schema.get("properties") or {}
    result = {}
    for key, value in params.items():
        wanted = (properties.get(key) or {}).get("type") if isinstance(properties.get(key), dict) else None
        types = wanted if isinstance(wanted, list) else [wanted]
        if isinstance(value, str) and "string" not in types:
            for kind in types:
                if kind in _COERCE:
                    try:
                        value = _COERCE[kind](value)
                        break
                    except (ValueError, KeyError):
                        continue
        result[key] = value
    return result


def validate_parameters(release, params):
    """Check ``params`` against the release's schema; name every bad field."""
    schema = release.parameter_schema
    if not schema:
        return
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema)
    errors = sorted(validator.iter_errors(_coerced(params, schema)), key=lambda e: list(e.path))
    if not errors:
        return
    parts = []
    for error in errors[:10]:
        field = "/".join(str(p) for p in error.path)
        if error.validator == "additionalProperties":
            parts.append(error.message)
        elif error.validator == "required":
            parts.append(error.message)
        else:
            parts.append(f"{field or '(parameters)'}: {error.message}")
    raise Invalid(f"parameters refused by {release.title!r}: " + "; ".join(parts))

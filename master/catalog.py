"""The software release catalog and parameter checking.

Owns what a catalog entry may be (URL, title, version, prices, schema), how a
SOFTWARE argument (a URL, or a title with an optional version: the newest by
default) names one, and the check of instance parameters against a release's
JSON Schema, naming each bad field.
"""

import re
import time
from decimal import Decimal, InvalidOperation

import jsonschema
import referencing
from sqlalchemy import or_, select

from . import audit, limits, settings
from .errors import BadRequest, Conflict, Invalid, NotFound
from .models import Computer, SoftwareRelease, Supply

PATTERN_TIMEOUT = 0.05          # seconds one pattern may take on one value
VALIDATION_BUDGET = 1.0         # seconds all of a request's patterns may take together
REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")

URL_RE = re.compile(r"^(https?://[^\s/]+/\S*|file:///\S+|/\S+)$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def version_key(release):
    """Order of versions: PEP 440 versions by their meaning (1.10 after 1.9), above
    anything else, which goes by when it was added."""
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(release.version), release.id)
    except InvalidVersion:
        return (0, release.id)


def _amount(text, what, decimals, largest, example):
    """A non-negative decimal with at most ``decimals`` places, as an integer count of
    10**-decimals units (exact), at most ``largest`` of them."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise BadRequest(f"{what} {text!r} is not a number, e.g. {example}") from None
    if not value.is_finite() or value < 0:
        raise BadRequest(f"{what} {text!r} must be zero or more")
    units = value.scaleb(decimals)
    if units != units.to_integral_value():
        raise BadRequest(f"{what} {text!r} has more than {decimals} decimals")
    if units > largest:
        raise BadRequest(f"{what} {text!r} is too large")
    return int(units)


def parse_price(text):
    """'4.99' -> 499 cents. Refuses negatives and more than two decimals."""
    return _amount(text, "price", 2, 10**9, "4.99 a month")


def parse_metered(text, what):
    """'0.015' (currency per unit) -> 15000 millionths. Six decimals at most."""
    return _amount(text, what, 6, 10**15, "0.02")


def _walk(node, path="#"):
    """(path, key, value) for every keyword of a schema, nested ones included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}/{index}")


def check_schema(schema):
    """Refuse a schema that could not be checked safely: invalid JSON Schema, a
    reference to anything but the schema itself (the master never fetches one),
    a pattern the regular expression engine cannot compile, or patterns where
    the checker could not bound their time."""
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise BadRequest("the parameter schema must be a JSON object")
    if limits.non_finite(schema):
        raise BadRequest("the parameter schema holds NaN or Infinity")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BadRequest(f"the parameter schema is not valid JSON Schema: {exc.message}") from None
    for path, key, value in _walk(schema):
        if key in REF_KEYWORDS and (not isinstance(value, str) or not value.startswith("#")):
            raise BadRequest(f"the parameter schema refers to {value!r} at {path}: only references "
                             "inside the schema (#/$defs/...) are allowed; the master never "
                             "fetches one: put the definition under $defs")
        patterns = [value] if key == "pattern" and isinstance(value, str) else \
            list(value) if key == "patternProperties" and isinstance(value, dict) else []
        for pattern in patterns:
            import regex        # (loaded by the first schema with a pattern: 2 MB a worker)

            try:
                regex.compile(pattern)
            except regex.error as exc:
                raise BadRequest(f"the parameter schema's pattern {pattern!r} at {path} does not "
                                 f"compile: {exc}") from None
        if key == "unevaluatedProperties" and isinstance(value, (dict, bool)) and \
                any(k == "patternProperties" for _, k, _ in _walk(schema)):
            raise BadRequest("the parameter schema combines unevaluatedProperties with "
                             "patternProperties, whose time the master cannot bound; use "
                             "additionalProperties instead")


def add(session, url, title, description="", price="0", schema=None, price_cpu_hour="0",
        price_disk_gb_month="0", version=""):
    url = url.strip()
    title = title.strip()
    version = (version or "").strip()
    if version and not VERSION_RE.match(version):
        raise BadRequest(f"version {version!r} must be 1-64 letters, digits, '.', '_', '+' or '-'")
    if not URL_RE.match(url):
        raise BadRequest(f"software URL {url!r} must be http(s)://..., file:///... or an absolute path")
    if not title:
        raise BadRequest("a software release needs a non-empty --title")
    bad = limits.bad_character(title) or limits.bad_character(
        (description or "").replace("\n", " ").replace("\t", " "))
    if bad is not None:
        raise BadRequest(f"the title and description must be printable text; found "
                         f"{limits.describe(bad)}")
    check_schema(schema)
    clash = session.scalars(select(SoftwareRelease).where(
        or_(SoftwareRelease.url == url, SoftwareRelease.url == title, SoftwareRelease.title == url,
            (SoftwareRelease.title == title) & (SoftwareRelease.version == version)))).first()
    if clash is not None:
        named = f"{clash.title!r}" + (f" version {clash.version!r}" if clash.version else "")
        raise Conflict(f"the catalog already has {named} ({clash.url}); pick another URL, "
                       "title or --version")
    release = SoftwareRelease(url=url, title=title, version=version, description=description or "",
                              price_cents=parse_price(price), parameter_schema=schema,
                              cpu_hour_micros=parse_metered(price_cpu_hour, "price per CPU-hour"),
                              disk_gb_month_micros=parse_metered(price_disk_gb_month,
                                                                 "price per GB-month of disk"))
    session.add(release)
    session.flush()
    return release


def add_by(session, admin, url, title, description="", price="0", schema=None, price_cpu_hour="0",
           price_disk_gb_month="0", version=""):
    """An admin adds a release: added, audited, and shown as the catalog shows it."""
    release = add(session, url, title, description, price, schema, price_cpu_hour,
                  price_disk_gb_month, version)
    shown = view(release, currency=settings.currency(session))
    audit.record(session, admin, "release", release.id, release.title, "added", url=release.url,
                 version=release.version, price=shown["price_per_month"],
                 cpu_hour=shown["price_per_cpu_hour"], disk_gb_month=shown["price_per_disk_gb_month"])
    return shown


def supplies_of(session, url):
    """Which nodes were asked to have the release, and how far they are."""
    rows = session.execute(select(Computer.name, Supply.requested, Supply.status, Supply.log_tail)
                           .join(Computer, Supply.computer_id == Computer.id)
                           .where(Supply.url == url).order_by(Computer.name)).all()
    return [{"node": r.name, "requested": r.requested, "status": r.status, "log_tail": r.log_tail}
            for r in rows]


def lookup(session, ref, version=None):
    """The catalog entry whose URL is ``ref``, or the version of title ``ref`` (the
    newest when ``version`` is None), or None. One query."""
    rows = session.scalars(select(SoftwareRelease).where(
        or_(SoftwareRelease.url == ref, SoftwareRelease.title == ref))).all()
    by_url = next((r for r in rows if r.url == ref), None)
    if by_url is not None and version in (None, by_url.version):
        return by_url
    titled = [r for r in rows if r.title == ref and version in (None, r.version)]
    return max(titled, key=version_key, default=None)


def require(session, ref, version=None):
    release = lookup(session, ref, version)
    if release is None:
        if version is not None and lookup(session, ref) is not None:
            known = ", ".join(v or '""' for v in versions(session, ref))
            raise NotFound(f"{ref!r} has no version {version!r}; it has {known}")
        raise NotFound(f"unknown software {ref!r}: it is neither a catalog URL nor a catalog title; "
                       "see `slapnode software list`")
    return release


def versions(session, title):
    """The versions of ``title``, oldest first (as version_key orders them)."""
    rows = session.scalars(select(SoftwareRelease).where(SoftwareRelease.title == title)).all()
    return [r.version for r in sorted(rows, key=version_key)]


def view(release, supplies=None, currency="EUR"):
    from slapnode.accounting import money, price_text

    result = {
        "url": release.url,
        "title": release.title,
        "version": release.version,
        "description": release.description,
        "price_per_month": money(release.price_cents),
        "price_per_cpu_hour": price_text(release.cpu_hour_micros or 0),
        "price_per_disk_gb_month": price_text(release.disk_gb_month_micros or 0),
        "currency": currency,
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


class _Budget:
    """Time left for the patterns of one validation."""

    def __init__(self, seconds):
        self.deadline = time.monotonic() + seconds

    def search(self, pattern, text):
        import regex

        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _TooSlow(pattern)
        try:
            return regex.search(pattern, text, timeout=min(PATTERN_TIMEOUT, left)) is not None
        except TimeoutError:
            raise _TooSlow(pattern) from None


class _TooSlow(Exception):
    def __init__(self, pattern):
        super().__init__(pattern)
        self.pattern = pattern


def _bounded_validator(cls, budget):
    """The schema's validator class, with every regular expression it runs
    bounded in time (the ``regex`` engine with a timeout, not ``re``)."""
    from jsonschema import ValidationError
    from jsonschema._utils import extras_msg

    def pattern(validator, patrn, instance, schema):
        if validator.is_type(instance, "string") and not budget.search(patrn, instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator, patterns, instance, schema):
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for key, value in instance.items():
                if budget.search(patrn, key):
                    yield from validator.descend(value, subschema, path=key, schema_path=patrn)

    def additional_properties(validator, aP, instance, schema):
        if not validator.is_type(instance, "object"):
            return
        properties = schema.get("properties", {})
        patterns = list(schema.get("patternProperties", {}))
        extras = [k for k in instance if k not in properties
                  and not any(budget.search(p, k) for p in patterns)]
        if validator.is_type(aP, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], aP, path=extra)
        elif not aP and extras:
            yield ValidationError("Additional properties are not allowed (%s %s unexpected)"
                                  % extras_msg(sorted(extras, key=str)))

    return jsonschema.validators.extend(cls, {"pattern": pattern,
                                              "patternProperties": pattern_properties,
                                              "additionalProperties": additional_properties})


def _no_retrieval(uri):
    raise referencing.exceptions.NoSuchResource(ref=uri)


def validate_parameters(release, params):
    """Check ``params`` against the release's schema; name every bad field. Never
    fetches anything; its patterns together take at most VALIDATION_BUDGET seconds."""
    schema = release.parameter_schema
    if not schema:
        return
    base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls = _bounded_validator(base, _Budget(VALIDATION_BUDGET))
    validator = cls(schema, registry=referencing.Registry(retrieve=_no_retrieval))
    try:
        errors = sorted(validator.iter_errors(_coerced(params, schema)), key=lambda e: list(e.path))
    except _TooSlow as exc:
        raise Invalid(f"parameters refused by {release.title!r}: checking them against the "
                      f"pattern {exc.pattern!r} takes too long; shorten the value") from None
    except referencing.exceptions.Unresolvable as exc:
        raise Invalid(f"the schema of {release.title!r} refers to {exc.ref!r}, which the "
                      "master does not fetch; ask the admin to fix the schema") from None
    if not errors:
        return
    parts, fields = [], {}
    for error in errors[:10]:
        shown = repr(error.instance)
        if len(shown) > 60 and shown in error.message:     # never echo a long value back
            error.message = error.message.replace(
                shown, f"the value ({len(str(error.instance))} characters)")
        field = "/".join(str(p) for p in error.path)
        if error.validator in ("additionalProperties", "required"):
            parts.append(error.message)
            names = (set(error.instance) - set(schema.get("properties") or {})
                     if error.validator == "additionalProperties" and isinstance(error.instance, dict)
                     else set(error.validator_value or ()) - set(error.instance or ())
                     if error.validator == "required" and isinstance(error.instance, dict) else ())
            for name in sorted(names):
                fields.setdefault(str(name), "not a parameter of this release"
                                  if error.validator == "additionalProperties" else "required")
        else:
            parts.append(f"{field or '(parameters)'}: {error.message}")
            if error.path:
                fields.setdefault(str(error.path[0]), error.message)
    raise Invalid(f"parameters refused by {release.title!r}: " + "; ".join(parts), fields=fields)

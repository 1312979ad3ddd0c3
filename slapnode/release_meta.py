"""What a release says about itself: SlapOS's ``software.cfg.json`` beside its profile.

Owns finding and reading it for ``slapnode software add``: the file is the profile's
URL with ``.json`` added (SlapOS's convention). Two shapes are read:

* SlapOS's descriptor: ``{"name", "description", "serialisation", "software-type":
  {TYPE: {"title", "description", "request": "instance-input-schema.json", ...}}}``;
  the parameter schema is the ``request`` file of the ``default`` type (or of the type
  with the lowest ``index``), relative to the descriptor;
* a JSON Schema itself (slapnode's own releases).

Fetches only what it is given (http(s), file:// or a path), at most MAX_BYTES each,
with a timeout; never follows ``$ref`` (the master refuses schemas that use others).
"""

import json
import os
import urllib.parse

MAX_BYTES = 1 << 20
TIMEOUT = 10.0


class MetaError(ValueError):
    pass


def _read(location):
    """Bytes at ``location``, or None when there is nothing there."""
    if location.startswith(("http://", "https://")):
        import requests

        try:
            response = requests.get(location, timeout=TIMEOUT, stream=True)
        except requests.RequestException as exc:
            raise MetaError(f"cannot fetch {location}: {type(exc).__name__}") from None
        with response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise MetaError(f"{location}: HTTP {response.status_code}")
            data = response.raw.read(MAX_BYTES + 1, decode_content=True)
    else:
        path = urllib.parse.urlparse(location).path if location.startswith("file://") else location
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise MetaError(f"{location} is larger than {MAX_BYTES // 1024} KiB")
    return data


def _json(location, data):
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetaError(f"{location} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise MetaError(f"{location} must hold a JSON object")
    return value


def _beside(location, name):
    if location.startswith(("http://", "https://", "file://")):
        return urllib.parse.urljoin(location, name)
    return os.path.join(os.path.dirname(location), name)


def descriptor_of(profile_url):
    """The profile's URL with ``.json`` added to its path (a query string stays)."""
    if profile_url.startswith(("http://", "https://", "file://")):
        parts = urllib.parse.urlsplit(profile_url)
        return urllib.parse.urlunsplit(parts._replace(path=parts.path + ".json"))
    return profile_url + ".json"


def default_type(descriptor):
    """The software type a plain request gets: ``default``, else the lowest ``index``."""
    types = descriptor.get("software-type") or {}
    if not isinstance(types, dict) or not types:
        return None, None
    if "default" in types:
        return "default", types["default"]
    name = min(types, key=lambda t: (types[t] or {}).get("index", 1 << 30)
               if isinstance(types[t], dict) else 1 << 30)
    return name, types[name]


def read(profile_url):
    """(schema or None, description or None, where it came from or None) for the release
    at ``profile_url``. Nothing beside it: (None, None, None)."""
    location = descriptor_of(profile_url)
    data = _read(location)
    if data is None:
        return None, None, None
    doc = _json(location, data)
    if "software-type" not in doc:
        return doc, doc.get("description") if isinstance(doc.get("description"), str) else None, location
    description = doc.get("description") if isinstance(doc.get("description"), str) else None
    _, kind = default_type(doc)
    request = (kind or {}).get("request") if isinstance(kind, dict) else None
    if not request:
        return None, description, location
    schema_location = _beside(location, request)
    data = _read(schema_location)
    if data is None:
        raise MetaError(f"{location} names the schema {request!r}, which is not there "
                        f"({schema_location})")
    return _json(schema_location, data), description, schema_location

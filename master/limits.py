"""What the master accepts, in one place: sizes, numbers and text.

Owns the bounds every input is held to before it is stored or compared
(docs/api.md lists them): request bodies, parameters and node reports are
size-capped; numbers are finite (NaN and Infinity are refused wherever they
could enter) and integers fit the database's columns; titles and names carry
no control or bidirectional-override character. It also owns the last line of
defence on the way out: a value already stored that JSON cannot carry (a NaN
from before these rules) is shown as text, so that one user's data never
makes another user's view or a node's desired state fail.
"""

import json
import math
import unicodedata

MAX_BODY = 1 << 20                  # bytes of a JSON request body
MAX_REPORT_BODY = 8 << 20           # a node's report of all its partitions
MAX_MAIL_BODY = 15 << 20            # a message of 10 MiB, in base64, passed on by a node
MAX_PARAMETERS = 256 << 10          # bytes of an instance's parameters, as JSON (as the CLI)
MAX_CONNECTION = 256 << 10          # bytes of what an instance publishes, as JSON
MAX_INT = 2**31 - 1                 # integers compared in SQL fit an INTEGER column

# Unicode categories refused in titles: controls (C0, C1), format characters (the
# bidirectional overrides and isolates, zero-width joiners), surrogates, private
# use, unassigned, and line or paragraph separators.
REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def bad_character(text):
    """The first character of ``text`` a title must not hold, or None."""
    for char in text:
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            return char
    return None


def describe(char):
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def json_size(value):
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def non_finite(value, path="", depth=0):
    """Where ``value`` holds a NaN or an infinity ("a/b/0"), else None."""
    if depth > 64:
        return path or "(value)"
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(value)"
    if isinstance(value, dict):
        for key, item in value.items():
            found = non_finite(item, f"{path}/{key}" if path else str(key), depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = non_finite(item, f"{path}/{index}" if path else str(index), depth + 1)
            if found:
                return found
    return None


def finite(value):
    """``value`` with every NaN or infinity made text: JSON can always carry it."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def strict_json(data):
    """``json.loads`` that refuses NaN and Infinity, as JSON itself does."""
    def refuse(name):
        raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)
    return json.loads(data, parse_constant=refuse)

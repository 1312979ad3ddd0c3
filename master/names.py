"""Instance names in DNS: a valid, stable, unique host name for every instance.

Owns the pure rules: a title and an owner name become DNS labels (lowercase
letters, digits and inner hyphens, at most ``LABEL_MAX`` characters; anything
else is made valid), an instance's name is ``<title>.<owner>`` inside the
master's zone, and a name already taken gets ``-2``, ``-3``… The name is chosen
once, when the instance is first requested, and kept (stored relative to the
zone, so a redeploy never changes it).
"""

import re
import unicodedata
from dataclasses import dataclass, field

DEFAULT_ZONE = "slapnode.internal"
TITLE_MAX = 24
OWNER_MAX = 16
ZONE_RE = re.compile(r"^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*"
                     r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def label(text, limit):
    """``text`` as one DNS label of at most ``limit`` characters: accents dropped,
    lowercase, every run of other characters one hyphen, no hyphen at either end."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    cleaned = cleaned[:limit].rstrip("-")
    return cleaned or "x"


def relative_name(title, owner):
    """The instance's name below the zone, before collisions: ``<title>.<owner>``."""
    return f"{label(title, TITLE_MAX)}.{label(owner, OWNER_MAX)}"


def unique_name(wanted, taken):
    """``wanted``, or ``wanted`` with ``-2``, ``-3``… on its first label, whichever is not
    in ``taken`` (a set or a predicate)."""
    is_taken = taken if callable(taken) else taken.__contains__
    if not is_taken(wanted):
        return wanted
    first, _, rest = wanted.partition(".")
    for n in range(2, 100000):
        suffix = f"-{n}"
        candidate = f"{first[:TITLE_MAX - len(suffix)]}{suffix}.{rest}"
        if not is_taken(candidate):
            return candidate
    raise ValueError("no free name")


def fqdn(relative, zone):
    return f"{relative}.{zone}" if relative else None


def check_zone(zone):
    """The master's zone: lowercase labels. Returns it, or raises ValueError."""
    zone = (zone or "").strip().rstrip(".").lower()
    if not ZONE_RE.match(zone):
        raise ValueError(f"domain {zone!r} is not a DNS zone (lowercase labels separated by dots, "
                         "e.g. slapnode.internal or grid.example.org)")
    return zone


@dataclass
class Naming:
    """The master's zone, and the DNS servers nodes forward it to ("host#port")."""

    zone: str = DEFAULT_ZONE
    servers: list = field(default_factory=list)
    mail_domain: str = ""       # where instances send mail from [the zone]

    def name_of(self, relative):
        return fqdn(relative, self.zone)

    def mail_from(self, relative):
        """The address an instance sends mail from: its relative name at the mail domain."""
        return f"{relative}@{self.mail_domain or self.zone}" if relative else ""

    def document(self):
        """What a node needs to know about names (part of its desired state)."""
        return {"zone": self.zone, "servers": list(self.servers)}

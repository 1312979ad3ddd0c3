"""Tokens and who is calling: the master's one security boundary.

Owns token minting and hashing, and the answer to "who is this?" for every
request: a user (maybe an admin) or a node. Only SHA-256 hashes of tokens are
ever stored; tokens carry 256 random bits, so a plain hash is enough (no slow
KDF needed, as there is nothing to brute-force).

Prefixes say what a token is for, so a token pasted in the wrong place gets a
helpful error: ``snu_`` user, ``sne_`` enrollment (one time), ``snn_`` node.
"""

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, field

USER_PREFIX = "snu_"
ENROLL_PREFIX = "sne_"
NODE_PREFIX = "snn_"


def mint(prefix):
    """A new token and the hash to store for it."""
    token = prefix + secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class UserPrincipal:
    id: int
    name: str
    is_admin: bool
    disabled: bool = False
    expires_at: dt.datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class NodePrincipal:
    computer_id: int
    name: str


def bearer(authorization):
    """The token in an ``Authorization: Bearer ...`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()

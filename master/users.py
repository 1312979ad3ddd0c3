"""Users and their tokens: creating them and recognising them.

Owns the user side of authentication: a new user with a first token, the
lookup of a bearer token (users by their token hash; nodes by their
credential hash, cached in memory since nodes poll often), and the admin
check. Tokens are never stored or logged in clear.
"""

import re
import time

from sqlalchemy import select

from . import auth
from .errors import BadRequest, Conflict, Forbidden, Unauthorized
from .models import Computer, Token, User

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def create(session, name, is_admin=False):
    """A new user and its first token (returned in clear, once)."""
    if not NAME_RE.match(name or ""):
        raise BadRequest(f"user name {name!r} must be 1-64 letters, digits, '_', '.', '@' or '-'")
    if session.scalars(select(User).where(User.name == name)).first() is not None:
        raise Conflict(f"user {name!r} already exists")
    user = User(name=name, is_admin=is_admin)
    session.add(user)
    session.flush()
    return user, add_token(session, user)


def add_token(session, user):
    token, digest = auth.mint(auth.USER_PREFIX)
    session.add(Token(user_id=user.id, token_hash=digest))
    return token


def authenticate_user(session, token):
    if token is None:
        raise Unauthorized("no token given; pass --token or set SLAPNODE_TOKEN")
    if token.startswith(auth.NODE_PREFIX):
        raise Forbidden("a node credential cannot act as a user")
    if token.startswith(auth.ENROLL_PREFIX):
        raise Forbidden("an enrollment token only enrolls a node: `slapnode node register`")
    row = session.scalars(select(Token).where(Token.token_hash == auth.hash_token(token))).first()
    if row is None:
        raise Unauthorized("unknown token; check --token or SLAPNODE_TOKEN")
    return auth.UserPrincipal(row.user.id, row.user.name, row.user.is_admin)


def require_admin(principal):
    if not principal.is_admin:
        raise Forbidden(f"user {principal.name!r} is not an admin; only admins may do this")


class UserTokens:
    """User token hash -> UserPrincipal, remembered for ``ttl`` seconds.

    Saves a query on every call; a user's admin flag or a new token is seen
    within ``ttl`` seconds at worst.
    """

    def __init__(self, ttl=30.0, size=10000):
        self.ttl = ttl
        self.size = size
        self._cache = {}

    def authenticate(self, session_factory, token):
        if token is not None and token.startswith(auth.USER_PREFIX):
            hit = self._cache.get(auth.hash_token(token))
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        with session_factory() as session:
            principal = authenticate_user(session, token)
        if len(self._cache) >= self.size:
            self._cache.clear()
        self._cache[auth.hash_token(token)] = (time.monotonic() + self.ttl, principal)
        return principal


class NodeCredentials:
    """Node credential hash -> NodePrincipal, cached (nodes poll all the time)."""

    def __init__(self):
        self._cache = {}

    def authenticate(self, session_factory, token):
        if token is None:
            raise Unauthorized("no node credential given")
        if not token.startswith(auth.NODE_PREFIX):
            raise Forbidden("this endpoint is for nodes; use the node credential from node.cfg")
        digest = auth.hash_token(token)
        principal = self._cache.get(digest)
        if principal is not None:
            return principal
        with session_factory() as session:
            row = session.execute(select(Computer.id, Computer.name)
                                  .where(Computer.credential_hash == digest)).first()
        if row is None:
            raise Unauthorized("unknown node credential; enroll again with `slapnode node register`")
        principal = auth.NodePrincipal(row.id, row.name)
        self._cache[digest] = principal
        return principal

    def forget_computer(self, computer_id):
        for digest, principal in list(self._cache.items()):
            if principal.computer_id == computer_id:
                del self._cache[digest]

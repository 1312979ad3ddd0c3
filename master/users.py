"""Users and their tokens: creating them, recognising them, disabling them.

Owns the user side of authentication: a new user with a first token, a user's
named tokens (created with an optional expiry, listed, revoked), the lookup of
a bearer token (users by their token hash; nodes by their credential hash,
cached in memory since nodes poll often), disabled users, passwords for the
web, and the admin check. Tokens are never stored or logged in clear.
"""

import datetime as dt
import re
import time

from sqlalchemy import delete, select

from . import audit, auth, passwords
from .errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from .models import Computer, Token, User, iso, utcnow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
EMAIL_RE = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z]{2,63}$")
MAX_TOKENS = 100


def aware(moment):
    """A datetime with a time zone: a naive one is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment


def check_email(email):
    if email and not EMAIL_RE.match(email):
        raise BadRequest(f"e-mail address {email!r} does not look like name@example.org")
    return email or ""


def create(session, name, is_admin=False, email="", by=None):
    """A new user and its first token, named ``default`` (returned in clear, once)."""
    if not NAME_RE.match(name or ""):
        raise BadRequest(f"user name {name!r} must be 1-64 letters, digits, '_', '.', '@' or '-'")
    email = check_email(email)
    if session.scalars(select(User).where(User.name == name)).first() is not None:
        raise Conflict(f"user {name!r} already exists")
    user = User(name=name, is_admin=is_admin, email=email)
    session.add(user)
    session.flush()
    audit.record(session, by, "user", user.id, name, "created", admin=is_admin)
    return user, add_token(session, user, "default")


def get(session, name):
    user = session.scalars(select(User).where(User.name == name)).first()
    if user is None:
        raise NotFound(f"no user {name!r}; see `slapnode user list`")
    return user


def add_token(session, user, name=None, expires_at=None, by=None):
    """A new token for ``user`` named ``name`` (or the first free ``default``,
    ``default-2``, ...); returned in clear, once."""
    taken = set(session.scalars(select(Token.name).where(Token.user_id == user.id)))
    if name is None:
        name = next(n for n in ("default", *(f"default-{i}" for i in range(2, MAX_TOKENS + 2)))
                    if n not in taken)
    if not TOKEN_NAME_RE.match(name):
        raise BadRequest(f"token name {name!r} must be 1-64 letters, digits, '_', '.', '@' or '-'")
    if name in taken:
        raise Conflict(f"you already have a token named {name!r}; revoke it first "
                       f"(`slapnode token revoke {name}`) or choose another name")
    if len(taken) >= MAX_TOKENS:
        raise Conflict(f"a user holds at most {MAX_TOKENS} tokens; revoke some: `slapnode token list`")
    expires_at = aware(expires_at)
    if expires_at is not None and expires_at <= utcnow():
        raise BadRequest(f"expiry {iso(expires_at)} is in the past; give a future time")
    token, digest = auth.mint(auth.USER_PREFIX)
    row = Token(user_id=user.id, name=name, token_hash=digest, expires_at=expires_at)
    session.add(row)
    session.flush()
    audit.record(session, by or auth.UserPrincipal(user.id, user.name, user.is_admin), "token",
                 row.id, f"{user.name}/{name}", "created", expires_at=iso(expires_at))
    return token


def list_tokens(session, user_id):
    rows = session.scalars(select(Token).where(Token.user_id == user_id).order_by(Token.name))
    now = utcnow()
    return [{"name": t.name, "created_at": iso(t.created_at), "expires_at": iso(t.expires_at),
             "expired": t.expires_at is not None and aware(t.expires_at) <= now} for t in rows]


def revoke_token(session, principal, name):
    """Delete the caller's token ``name``. Returns its hash (for the caches to forget)."""
    row = session.scalars(select(Token).where(Token.user_id == principal.id,
                                              Token.name == name)).first()
    if row is None:
        raise NotFound(f"you have no token named {name!r}; see `slapnode token list`")
    digest = row.token_hash
    session.execute(delete(Token).where(Token.id == row.id))
    audit.record(session, principal, "token", row.id, f"{principal.name}/{name}", "revoked")
    return digest


def authenticate_user(session, token):
    if token is None:
        raise Unauthorized("no token given; pass --token or set SLAPNODE_TOKEN")
    if token.startswith(auth.NODE_PREFIX):
        raise Forbidden("a node credential cannot act as a user")
    if token.startswith(auth.ENROLL_PREFIX):
        raise Forbidden("an enrollment token only enrolls a node: `slapnode node register`")
    row = session.scalars(select(Token).where(Token.token_hash == auth.hash_token(token))).first()
    if row is None:
        raise Unauthorized("unknown token (revoked, or never made); check --token or SLAPNODE_TOKEN")
    if row.expires_at is not None and aware(row.expires_at) <= utcnow():
        raise Unauthorized(f"token {row.name!r} expired at {iso(row.expires_at)}; "
                           "make a new one with `slapnode token create NAME`")
    return auth.UserPrincipal(row.user.id, row.user.name, row.user.is_admin, row.user.disabled,
                              expires_at=aware(row.expires_at))


def require_admin(principal):
    if not principal.is_admin:
        raise Forbidden(f"user {principal.name!r} is not an admin; only admins may do this")


def require_active(principal):
    """A disabled user may look, not change: their instances keep running."""
    if principal.disabled:
        raise Forbidden(f"user {principal.name!r} is disabled; an admin can enable it again "
                        f"(`slapnode user enable {principal.name}`)")


def set_disabled(session, admin, name, disabled):
    user = get(session, name)
    if user.id == admin.id and disabled:
        raise Conflict("you cannot disable yourself; ask another admin")
    if user.disabled != disabled:
        user.disabled = disabled
        audit.record(session, admin, "user", user.id, user.name,
                     "disabled" if disabled else "enabled")
    return user


def set_password(session, by, name, password):
    reason = passwords.check_strength(password)
    if reason:
        raise BadRequest(reason)
    user = get(session, name)
    user.password_hash = passwords.hash_password(password)
    audit.record(session, by, "user", user.id, user.name, "password set")
    return user


def check_password(session, name, password):
    """The user whose name and password these are, or Unauthorized (same answer for
    an unknown name and a wrong password)."""
    user = session.scalars(select(User).where(User.name == name)).first()
    if not passwords.verify(user.password_hash if user else None, password or ""):
        raise Unauthorized("wrong user name or password")
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    return auth.UserPrincipal(user.id, user.name, user.is_admin, user.disabled)


def view(user):
    return {"name": user.name, "email": user.email, "admin": user.is_admin,
            "disabled": user.disabled, "password": user.password_hash is not None,
            "created_at": iso(user.created_at)}


def list_all(session):
    return [view(u) for u in session.scalars(select(User).order_by(User.name))]


class UserTokens:
    """User token hash -> UserPrincipal, remembered for ``ttl`` seconds (and never
    past the token's expiry).

    Saves a query on every read; every write authenticates against the database
    (``deps.user_in``), so a revoked token or a disabled user cannot change anything
    from the moment of the revocation; reads through this cache stop at once in the
    process that revoked (``forget``), within ``ttl`` in others.
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
        lifetime = self.ttl
        if principal.expires_at is not None:
            lifetime = min(lifetime, (principal.expires_at - utcnow()).total_seconds())
        self._cache[auth.hash_token(token)] = (time.monotonic() + lifetime, principal)
        return principal

    def forget(self, digest):
        self._cache.pop(digest, None)

    def forget_user(self, user_id):
        for digest, (_, principal) in list(self._cache.items()):
            if principal.id == user_id:
                self._cache.pop(digest, None)

    def clear(self):
        self._cache.clear()


class NodeCredentials:
    """Node credential hash -> NodePrincipal, cached (nodes poll all the time)."""

    def __init__(self):
        self._cache = {}

    def cached(self, token):
        """The principal of a credential seen before, or None (no I/O: for the event loop)."""
        return self._cache.get(auth.hash_token(token)) if token else None

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
                self._cache.pop(digest, None)

    def clear(self):
        self._cache.clear()

"""Who is using My Space: browser sessions, CSRF tokens, sign-in throttling,
invitation links.

Owns the session cookie (a random secret; only its SHA-256 is stored; HttpOnly,
SameSite=Lax, Secure under HTTPS), the CSRF token of each session (every form
carries it; a pre-session form such as sign-in uses a double-submit cookie),
the throttle on failed sign-ins (pure: a clock is passed in), and the one-time
links an admin makes with ``slapnode user invite``.
"""

import datetime as dt
import hmac
import secrets
import threading
import time
from collections import deque

from sqlalchemy import delete, select

from .. import audit, auth, users
from ..errors import BadRequest, NotFound, Unauthorized
from ..models import Invite, Token, User, WebSession, iso, utcnow
from ..users import aware

COOKIE = "slapnode_session"
PRE_COOKIE = "slapnode_csrf"        # double-submit token of the sign-in and invite forms
LIFETIME = dt.timedelta(days=7)
INVITE_LIFETIME = dt.timedelta(days=7)


class SignedIn:
    """The user behind a browser session."""

    __slots__ = ("principal", "csrf", "session_id")

    def __init__(self, principal, csrf, session_id):
        self.principal, self.csrf, self.session_id = principal, csrf, session_id


def open_session(session, principal, token_id=None, now=None):
    """A new session for ``principal``; returns the cookie's secret (shown once)."""
    now = now or utcnow()
    secret = secrets.token_urlsafe(32)
    session.add(WebSession(secret_hash=auth.hash_token(secret), user_id=principal.id,
                           token_id=token_id, csrf=secrets.token_urlsafe(24), created_at=now,
                           expires_at=now + LIFETIME))
    session.execute(delete(WebSession).where(WebSession.user_id == principal.id,
                                             WebSession.expires_at < now))
    return secret


def signed_in(session, secret, now=None):
    """The SignedIn of a cookie's secret, or None (unknown, expired, signed out)."""
    if not secret or len(secret) > 128:
        return None
    row = session.execute(select(WebSession, User).join(User, User.id == WebSession.user_id).where(
        WebSession.secret_hash == auth.hash_token(secret))).first()
    if row is None:
        return None
    web, user = row
    if aware(web.expires_at) <= (now or utcnow()):
        return None
    return SignedIn(auth.UserPrincipal(user.id, user.name, user.is_admin, user.disabled),
                    web.csrf, web.id)


def close_session(session, secret):
    if secret:
        session.execute(delete(WebSession).where(WebSession.secret_hash == auth.hash_token(secret)))


def close_others(session, user_id, keep_id=None):
    """Sign the user out everywhere else (after a password change)."""
    query = delete(WebSession).where(WebSession.user_id == user_id)
    if keep_id is not None:
        query = query.where(WebSession.id != keep_id)
    session.execute(query)


def token_sign_in(session, token):
    """(principal, token id) of a user token pasted into the sign-in form."""
    principal = users.authenticate_user(session, (token or "").strip() or None)
    token_id = session.scalar(select(Token.id).where(
        Token.token_hash == auth.hash_token(token.strip())))
    return principal, token_id


def same(expected, given):
    """Constant-time comparison of two CSRF tokens; an empty one never matches."""
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def new_csrf():
    return secrets.token_urlsafe(24)


# ---- one-time invitation links ---------------------------------------------

def invite(session, admin, name, now=None):
    """A one-time secret with which user ``name`` sets their password; earlier ones die."""
    now = now or utcnow()
    user = users.get(session, name)
    secret = secrets.token_urlsafe(32)
    session.execute(delete(Invite).where(Invite.user_id == user.id))
    session.add(Invite(secret_hash=auth.hash_token(secret), user_id=user.id, created_at=now,
                       expires_at=now + INVITE_LIFETIME))
    audit.record(session, admin, "user", user.id, user.name, "invited",
                 expires_at=iso(now + INVITE_LIFETIME))
    return secret, now + INVITE_LIFETIME


def invited(session, secret, now=None):
    """The user an invitation secret is for, or NotFound (used, replaced or expired)."""
    row = None
    if secret and len(secret) <= 128:
        row = session.execute(select(Invite, User).join(User, User.id == Invite.user_id).where(
            Invite.secret_hash == auth.hash_token(secret))).first()
    if row is None or aware(row[0].expires_at) <= (now or utcnow()):
        raise NotFound("this invitation link was used, replaced or has expired; "
                       "ask an admin for a new one (`slapnode user invite NAME`)")
    return row[0], row[1]


def accept(session, secret, password):
    """Set the invited user's password and use the link up; returns the principal."""
    row, user = invited(session, secret)
    principal = auth.UserPrincipal(user.id, user.name, user.is_admin, user.disabled)
    users.set_password(session, principal, user.name, password)
    session.execute(delete(Invite).where(Invite.id == row.id))
    return principal


def check_new_password(password, repeated):
    if password != repeated:
        raise BadRequest("the two passwords differ; type the same password twice")


# ---- throttling failed sign-ins --------------------------------------------

class Throttle:
    """At most ``per_name`` failed sign-ins per user name and ``per_address`` per client
    address within ``window`` seconds; further attempts are refused until the oldest
    failure leaves the window. Pure bookkeeping: the caller passes the time."""

    def __init__(self, per_name=5, per_address=20, window=600.0, size=10000):
        self.per_name, self.per_address, self.window, self.size = per_name, per_address, window, size
        self._failures = {}
        self._lock = threading.Lock()

    def _recent(self, key, now):
        seen = self._failures.get(key)
        if seen is None:
            return None
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if not seen:
            del self._failures[key]
            return None
        return seen

    def wait(self, name, address, now=None):
        """Seconds to wait before another attempt may be made (0: go ahead)."""
        now = time.monotonic() if now is None else now
        longest = 0.0
        with self._lock:
            for key, cap in ((("name", name.lower()), self.per_name), (("addr", address), self.per_address)):
                seen = self._recent(key, now)
                if seen is not None and len(seen) >= cap:
                    longest = max(longest, seen[0] + self.window - now)
        return longest

    def failed(self, name, address, now=None):
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) >= self.size:        # bounded memory: forget the stalest
                for key in list(self._failures)[: self.size // 10]:
                    del self._failures[key]
            for key in (("name", name.lower()), ("addr", address)):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, name):
        with self._lock:
            self._failures.pop(("name", name.lower()), None)


def refuse_for(seconds):
    minutes = max(1, int(seconds // 60) + (1 if seconds % 60 else 0))
    return Unauthorized(f"too many failed sign-ins; wait {minutes} minute{'s' if minutes > 1 else ''} "
                        "and try again, or ask an admin for an invitation link", status=429)

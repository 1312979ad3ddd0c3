"""Passwords for the web sign-in: argon2id, through argon2-cffi.

Owns hashing and checking, nothing else. The parameters are argon2-cffi's
defaults (RFC 9106's second recommendation, 64 MiB, 3 passes); a hash made with
older parameters is re-made at the next good sign-in (``needs_rehash``).
"""

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 10
MAX_LENGTH = 1024
_hasher = PasswordHasher()


def check_strength(password):
    """A one-line reason the password is refused, or None."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    return None


def hash_password(password):
    return _hasher.hash(password)


def verify(stored, password):
    """True if ``password`` matches the stored hash (constant work either way)."""
    if not stored:
        _hasher.hash(password or "")        # as slow as a real check: no timing oracle
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored):
    return _hasher.check_needs_rehash(stored)

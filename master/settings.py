"""Settings every worker of the master shares, kept in the database: the currency.

Owns reading and writing them; ``master init`` sets them once.
"""

import re

from .errors import BadRequest, Conflict
from .models import Invoice, Setting

CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
DEFAULT_CURRENCY = "EUR"


def get(session, key, default=None):
    row = session.get(Setting, key)
    return row.value if row is not None else default


def currency(session):
    return get(session, "currency", DEFAULT_CURRENCY)


def set_currency(session, code):
    """The master's currency (ISO 4217, e.g. EUR); fixed once an invoice exists."""
    code = (code or "").strip().upper()
    if not CURRENCY_RE.match(code):
        raise BadRequest(f"currency {code!r} must be an ISO 4217 code of three letters, e.g. EUR")
    current = currency(session)
    if code == current and session.get(Setting, "currency") is not None:
        return code
    if code != current and session.query(Invoice.id).first() is not None:
        raise Conflict(f"invoices exist in {current}; the currency cannot change now")
    row = session.get(Setting, "currency")
    if row is None:
        session.add(Setting(key="currency", value=code))
    else:
        row.value = code
    return code

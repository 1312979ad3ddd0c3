"""The audit trail: who changed what, and when.

Owns the one way every change is written down (``record``, inside the
change's own transaction, so a change and its record commit or roll back
together) and read back (``history``). A record names what changed, never a
secret: parameter and connection values, tokens and passwords are counted or
named, not copied.
"""

from sqlalchemy import insert, select

from .models import AuditEvent, iso, utcnow

MAX_HISTORY = 1000


def actor_of(principal):
    """The name a principal is recorded under: a user's name, ``node:NAME``, ``master``."""
    if principal is None:
        return "master"
    if hasattr(principal, "computer_id"):
        return f"node:{principal.name}"
    return principal.name


def record(session, principal, kind, subject_id, subject, action, **detail):
    """One row, written at once with a plain INSERT (no unit of work: this is on the
    request path)."""
    session.execute(insert(AuditEvent).values(
        at=utcnow(), actor=actor_of(principal), subject_kind=kind, subject_id=subject_id,
        subject=str(subject)[:256], action=action, detail=detail))


def history(session, kind, subject_id, limit=MAX_HISTORY):
    rows = session.scalars(select(AuditEvent)
                           .where(AuditEvent.subject_kind == kind, AuditEvent.subject_id == subject_id)
                           .order_by(AuditEvent.id.desc()).limit(limit)).all()
    return [view(row) for row in reversed(rows)]


def view(row):
    return {"at": iso(row.at), "actor": row.actor, "subject": row.subject, "action": row.action,
            "detail": row.detail or {}}

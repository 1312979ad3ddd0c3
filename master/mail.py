"""Mail from partitions, on the master's side: the smarthost, and what a node may send.

Owns the smarthost settings (``master init --smtp-relay``: host and port, how TLS is
spoken, the credentials, the mail domain; kept in master.cfg, 0600, with the database
URL's password), the address each instance sends from (its DNS name's relative part
at the mail domain), the check that a node passes on mail only for an instance it
holds, the hand-over to the smarthost (Python's smtplib, certificate and name
verified), and the audit trail's counts (one row per instance and hour, updated:
messages and recipients, never a word of the content).

The credentials stay here: a volunteer's node only ever talks to the master, with
its own node credential (docs/mail.md).
"""

import re
import smtplib
import socket
import ssl
from dataclasses import dataclass

from sqlalchemy import select

from slapnode.mail.rules import instance_header

from .errors import ApiError, BadRequest, NotFound
from .models import AuditEvent, Instance, Partition, utcnow

MAX_MESSAGE = 10 << 20          # bytes of one message
MAX_RECIPIENTS = 100
SMTP_TIMEOUT = 30
TLS_MODES = ("starttls", "tls", "none")
# an address as SMTP carries it: no spaces, brackets or line ends, one @
ADDRESS_RE = re.compile(r"^[^\s<>@\"(),;:\\\[\]]{1,64}@[A-Za-z0-9.-]{1,253}$")


@dataclass(frozen=True)
class Smarthost:
    host: str
    port: int
    tls: str = "starttls"
    user: str = ""
    password: str = ""
    ca_file: str = ""


def smarthost_of(saved):
    """The smarthost in master.cfg's settings, or None when the master has none. Pure."""
    relay = (saved.get("smtp_relay") or "").strip()
    if not relay:
        return None
    host, _, port = relay.rpartition(":")
    return Smarthost(host.strip("[]"), int(port), saved.get("smtp_tls") or "starttls",
                     saved.get("smtp_user") or "", saved.get("smtp_password") or "",
                     saved.get("smtp_ca_file") or "")


def check_relay(text):
    """``HOST:PORT`` of a smarthost -> the same text; ValueError saying what is wrong. Pure."""
    host, sep, port = (text or "").strip().rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--smtp-relay {text!r}: expected HOST:PORT, e.g. smtp.example.org:587")
    return text.strip()


def settings_from(relay, tls, user, password, ca_file, domain):
    """What ``master init`` saves of its mail options: {key: value} (None keeps the
    saved value, "" forgets it). Pure; ValueError saying which option is wrong."""
    values = {}
    if relay is not None:
        values["smtp_relay"] = "" if relay.strip().lower() == "none" else check_relay(relay)
    if tls is not None:
        if tls not in TLS_MODES:
            raise ValueError(f"--smtp-tls {tls!r}: one of {', '.join(TLS_MODES)}")
        values["smtp_tls"] = tls
    if user is not None:
        values["smtp_user"] = user.strip()
    if password is not None:
        if "\n" in password or "\r" in password:
            raise ValueError("the smarthost password cannot hold a line break")
        values["smtp_password"] = password
    if ca_file is not None:
        values["smtp_ca_file"] = ca_file
    if domain is not None:
        from .names import check_zone

        try:
            values["mail_domain"] = check_zone(domain)
        except ValueError:
            raise ValueError(f"--mail-domain {domain!r} is not a domain, e.g. "
                             "grid.example.org") from None
    if values.get("smtp_relay") == "":        # no smarthost: nothing of it is kept
        values.update(smtp_tls="", smtp_user="", smtp_password="", smtp_ca_file="")
    return values


def describe(saved):
    """One line on how mail from partitions leaves (no password). Pure."""
    smarthost = smarthost_of(saved)
    if smarthost is None:
        return ("mail from partitions: not sent (no smarthost; add one with "
                "--smtp-relay HOST:PORT)")
    how = {"starttls": "STARTTLS", "tls": "TLS", "none": "no TLS"}.get(smarthost.tls, smarthost.tls)
    who = f", as {smarthost.user}" if smarthost.user else ""
    domain = saved.get("mail_domain") or saved.get("domain") or "the DNS zone"
    return (f"mail from partitions: through {smarthost.host}:{smarthost.port} ({how}{who}), "
            f"from NAME@{domain}")


def check_recipients(recipients):
    if not recipients:
        raise BadRequest("no recipient")
    if len(recipients) > MAX_RECIPIENTS:
        raise BadRequest(f"at most {MAX_RECIPIENTS} recipients per message")
    bad = [r for r in recipients if not ADDRESS_RE.match(r)]
    if bad:
        raise BadRequest(f"recipient {bad[0][:80]!r} is not an address (user@example.org)")


def sender_for(session, computer, partition_ref, instance_id, naming):
    """(sender address, instance title, header) for the instance in ``partition_ref`` of ``computer``; a
    404 when this node does not hold that instance there (a node speaks for its own
    partitions only)."""
    partition = session.scalars(select(Partition).where(
        Partition.computer_id == computer.id, Partition.reference == partition_ref)).first()
    if partition is None or partition.instance_id != instance_id:
        raise NotFound(f"partition {partition_ref!r} of this computer does not hold "
                       f"instance {instance_id}")
    instance = session.get(Instance, instance_id)
    if instance.requested_state == "destroyed" or not instance.hostname:
        raise NotFound(f"instance {instance_id} sends no mail: it has no name (destroyed?)")
    return (naming.mail_from(instance.hostname), instance.title,
            instance_header(naming.name_of(instance.hostname), instance_id, computer.name))


def send(smarthost, sender, recipients, message):
    """Hand the message to the smarthost. ApiError 502 with the smarthost's words (or
    the connection's failure) when it does not take it."""
    where = f"{smarthost.host}:{smarthost.port}"
    context = ssl.create_default_context(cafile=smarthost.ca_file or None)
    try:
        if smarthost.tls == "tls":
            client = smtplib.SMTP_SSL(smarthost.host, smarthost.port, timeout=SMTP_TIMEOUT,
                                      context=context)
        else:
            client = smtplib.SMTP(smarthost.host, smarthost.port, timeout=SMTP_TIMEOUT)
        with client:
            client.ehlo()
            if smarthost.tls == "starttls":
                client.starttls(context=context)
                client.ehlo()
            if smarthost.user:
                client.login(smarthost.user, smarthost.password)
            refused = client.sendmail(sender, recipients, message)
    except smtplib.SMTPRecipientsRefused as exc:
        code, words = next(iter(exc.recipients.values()))
        raise ApiError(f"the smarthost {where} refused every recipient: {code} "
                       f"{_text(words)}", status=422) from None
    except smtplib.SMTPResponseException as exc:
        status = 422 if 500 <= exc.smtp_code < 600 else 502
        raise ApiError(f"the smarthost {where} said {exc.smtp_code} {_text(exc.smtp_error)}",
                       status=status) from None
    except smtplib.SMTPNotSupportedError:
        raise ApiError(f"the smarthost {where} does not offer STARTTLS; check --smtp-tls",
                       status=502) from None
    except ssl.SSLError as exc:
        raise ApiError(f"TLS with the smarthost {where} failed ({exc.reason or exc}); check "
                       "--smtp-tls and --smtp-ca-file", status=502) from None
    except (OSError, smtplib.SMTPException) as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else str(exc) or type(exc).__name__
        raise ApiError(f"the smarthost {where} cannot be reached ({reason}); the master "
                       "will take the message when it can", status=502) from None
    return len(recipients) - len(refused)


def _text(words):
    if isinstance(words, bytes):
        words = words.decode("utf-8", "replace")
    return " ".join(str(words).split())[:300]


def count(session, node, instance_id, title, recipients, now=None):
    """One more message in the audit trail: the instance's row for this hour counts it
    (messages and recipients), or a new row starts the hour."""
    from . import audit

    now = now or utcnow()
    hour = now.replace(minute=0, second=0, microsecond=0)
    row = session.scalars(select(AuditEvent).where(
        AuditEvent.subject_kind == "instance", AuditEvent.subject_id == instance_id,
        AuditEvent.action == "mail sent", AuditEvent.at >= hour)
        .order_by(AuditEvent.id.desc()).limit(1)).first()
    if row is None:
        audit.record(session, node, "instance", instance_id, title, "mail sent", messages=1,
                     recipients=recipients, since=hour.isoformat())
        return 1
    detail = dict(row.detail or {})
    detail["messages"] = int(detail.get("messages", 0)) + 1
    detail["recipients"] = int(detail.get("recipients", 0)) + recipients
    row.detail = detail
    return detail["messages"]

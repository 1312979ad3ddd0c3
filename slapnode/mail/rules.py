"""What the node's mail relay decides, apart from any socket. Pure.

Owns who may send (a partition of this node whose instance declared it sends
mail), the address it sends from (the master's, per instance: the envelope sender
is rewritten to it), the header naming the instance, each partition's hourly
allowance (a sliding hour of timestamps, kept across agent restarts), and the SMTP
replies for each refusal, written to tell the sender what to do.
"""

import time
from dataclasses import dataclass

WINDOW = 3600.0
MAX_RECIPIENTS = 100
MAX_MESSAGE = 10 << 20
HEADER = "X-Slapnode-Instance"


@dataclass(frozen=True)
class Sender:
    """A partition that may speak to the relay."""
    reference: str
    instance_id: int
    mail_from: str
    hostname: str
    root: str                   # the partition's directory, where it declares it sends mail


def senders(doc, parts):
    """{partition address: Sender} for the partitions holding a live instance.
    ``parts``: {reference: Part}."""
    found = {}
    for item in (doc or {}).get("partitions", []):
        instance, part = item.get("instance"), parts.get(item["reference"])
        if not instance or part is None or instance.get("state") == "destroyed" \
                or not instance.get("mail_from"):
            continue
        sender = Sender(item["reference"], instance["id"], instance["mail_from"],
                        instance.get("hostname") or "", str(part.root))
        for address in (part.ipv4, part.ipv6):
            found[str(address)] = sender
    return found


def declares(records):
    """Whether the instance declared it sends mail: one of its etc/mail/*.json records
    (parsed, or None) says ``{"sends": true}`` (the slapnode:sendmail recipe writes it)."""
    return any(isinstance(r, dict) and r.get("sends") is True for r in records)


def instance_header(fqdn, instance_id, computer):
    """The header that names the sending instance, from values no user chose."""
    return f"{HEADER}: {fqdn} (instance {instance_id} on {computer})"


def with_header(message, header):
    """``message`` (bytes) with ``header`` first, and without any header of that name
    the sender wrote (a partition cannot pass for another instance)."""
    name = header.split(":", 1)[0].lower().encode()
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = message.partition(b"\n\n")
    eol = b"\n" if sep == b"\n\n" else b"\r\n"
    kept, skipping = [], False
    for line in head.splitlines():
        if line[:1] in (b" ", b"\t"):           # a folded line belongs to the header above
            if not skipping:
                kept.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() == name
        if not skipping:
            kept.append(line)
    lines = [header.encode()] + kept
    return eol.join(lines) + (sep + body if sep else eol + eol)


class Allowance:
    """Messages each partition may send in a sliding hour."""

    def __init__(self, per_hour, sent=None):
        self.per_hour = per_hour
        self.sent = {k: sorted(v) for k, v in (sent or {}).items()}

    def _recent(self, key, now):
        recent = [t for t in self.sent.get(key, ()) if now - t < WINDOW]
        if recent:
            self.sent[key] = recent
        else:
            self.sent.pop(key, None)
        return recent

    def next_at(self, key, now=None):
        """None when ``key`` may send now, else the time it may send again."""
        now = time.time() if now is None else now
        recent = self._recent(key, now)
        if len(recent) < self.per_hour:
            return None
        return recent[len(recent) - self.per_hour] + WINDOW

    def count(self, key, now=None):
        now = time.time() if now is None else now
        self._recent(key, now)
        self.sent.setdefault(key, []).append(now)

    def state(self):
        return {k: list(v) for k, v in self.sent.items()}


# -- replies -------------------------------------------------------------------------

def not_a_partition(address):
    return f"550 5.7.1 relaying denied: {address} is not a partition of this node"


def not_declared(sender):
    return (f"550 5.7.1 instance {sender.instance_id} did not declare that it sends mail: "
            "add a part with recipe = slapnode:sendmail to its profile")


def too_many(per_hour, next_at):
    when = time.strftime("%H:%M:%S UTC", time.gmtime(next_at))
    return (f"450 4.7.1 this partition sent {per_hour} messages in the last hour (the node's "
            f"limit, mail_per_hour); the next one is accepted from {when}")


def after_master(status, message):
    """The SMTP reply for the master's answer to a pass-on (``status``: HTTP, or None
    when the master could not be reached)."""
    words = " ".join(str(message).split())[:400]
    if status == 422 or status == 400:
        return f"550 5.7.1 {words}"
    if status == 404:
        return f"550 5.7.1 the master does not know this instance here: {words}"
    return f"451 4.3.0 not sent now, try again later: {words}"

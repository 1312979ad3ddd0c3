"""Pure logic of mail from partitions: sendmail's command line, the relay's rules and
replies, the master's smarthost settings. No socket, no process."""

import asyncio
from types import SimpleNamespace

import pytest

from slapnode.mail import rules
from slapnode.mail.relay import Handler
from slapnode.mail.sendmail import complete, default_gateway, parse_args


def test_sendmail_understands_the_options_programs_pass():
    assert parse_args(["-t", "-oi"]) == ([], True)
    assert parse_args(["-i", "-f", "me@x.example", "-F", "Me", "a@b.example"]) == (["a@b.example"], False)
    assert parse_args(["-fme@x.example", "--", "-odd@b.example"]) == (["-odd@b.example"], False)
    for bad in (["-f"], ["-Q"]):
        with pytest.raises(ValueError):
            parse_args(bad)


def test_sendmail_t_takes_the_recipients_from_the_headers_and_drops_bcc():
    raw = b"To: Ada <ada@example.org>, bob@example.org\nBcc: audit@example.org\nSubject: s\n\nbody\n"
    message, recipients = complete(raw, ["ada@example.org"], True)
    assert recipients == ["ada@example.org", "bob@example.org", "audit@example.org"]
    assert b"Bcc" not in message and b"Date: " in message and b"Message-ID: " in message
    kept, only = complete(b"Date: Mon, 1 Jan 2024 00:00:00 +0000\n\nx\n", ["c@example.org"], False)
    assert only == ["c@example.org"] and kept.count(b"Date:") == 1


def test_the_default_gateway_comes_from_the_routing_table():
    table = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
             "eth0\t0000F00A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
             "eth0\t00000000\t0100F00A\t0003\t0\t0\t0\t00000000\n")
    assert default_gateway(table) == "10.240.0.1"
    assert default_gateway(table.splitlines()[0] + "\n") is None


def test_the_header_naming_the_instance_replaces_any_the_sender_wrote():
    header = rules.instance_header("web.ada.grid.test", 7, "node-a")
    forged = (b"X-Slapnode-Instance: bank.example\r\n (folded)\r\nSubject: hi\r\n\r\n"
              b"X-Slapnode-Instance: in the body stays\r\n")
    out = rules.with_header(forged, header)
    assert out.startswith(header.encode() + b"\r\nSubject: hi\r\n\r\n")
    assert b"bank.example" not in out and b"(folded)" not in out
    assert out.endswith(b"X-Slapnode-Instance: in the body stays\r\n")
    assert rules.with_header(b"Subject: a\n\nb\n", header) == header.encode() + b"\nSubject: a\n\nb\n"
    assert rules.with_header(b"no headers at all", header).startswith(header.encode())


def test_the_hourly_allowance_refuses_the_101st_and_says_when_the_next_passes():
    allowance = rules.Allowance(100)
    for i in range(100):
        assert allowance.next_at("slappart0", now=1000.0 + i) is None
        allowance.count("slappart0", now=1000.0 + i)
    assert allowance.next_at("slappart0", now=1100.0) == 1000.0 + rules.WINDOW
    assert allowance.next_at("slappart1", now=1100.0) is None        # per partition
    kept = rules.Allowance(100, allowance.state())
    assert kept.next_at("slappart0", now=1100.0) is not None         # across restarts
    assert allowance.next_at("slappart0", now=1000.0 + rules.WINDOW) is None
    reply = rules.too_many(100, 4600.0)
    assert reply.startswith("450 4.7.1") and "mail_per_hour" in reply and "01:16:40 UTC" in reply


def test_senders_are_the_live_instances_by_each_of_their_addresses():
    part = SimpleNamespace(ipv4="10.0.0.2", ipv6="fd00::2", root="/srv/p0")
    doc = {"partitions": [
        {"reference": "p0", "instance": {"id": 3, "state": "started", "mail_from": "w.a@z.test",
                                         "hostname": "w.a.z.test"}},
        {"reference": "p1", "instance": {"id": 4, "state": "destroyed", "mail_from": "x@z.test"}},
        {"reference": "p2", "instance": None}]}
    found = rules.senders(doc, {"p0": part, "p1": part, "p2": part})
    assert set(found) == {"10.0.0.2", "fd00::2"}
    assert found["10.0.0.2"] == rules.Sender("p0", 3, "w.a@z.test", "w.a.z.test", "/srv/p0")
    assert rules.declares([None, {"sends": True}]) and not rules.declares([{"sends": "yes"}])


def test_the_masters_answer_becomes_an_smtp_reply_that_says_whether_to_retry():
    assert rules.after_master(422, "refused").startswith("550 5.7.1")
    assert rules.after_master(404, "gone").startswith("550 5.7.1")
    assert rules.after_master(502, "smarthost away").startswith("451 4.3.0")
    assert rules.after_master(None, "unreachable").startswith("451")
    assert rules.after_master(503, "no smarthost").startswith("451")


class _Relay:
    def __init__(self, senders, declared=True, per_hour=2):
        self.senders = senders
        self.allowance = rules.Allowance(per_hour)
        self.is_declared = declared
        self.computer = "node-a"

    def declared(self, sender):
        return self.is_declared


def _mail(handler, peer):
    session = SimpleNamespace(peer=(peer, 1234))
    envelope = SimpleNamespace(mail_from=None, mail_options=[], rcpt_tos=[], rcpt_options=[])
    return asyncio.run(handler.handle_MAIL(None, session, envelope, "forged@bank.example", [])), envelope


def test_the_relay_speaks_only_for_its_declared_partitions_and_rewrites_the_sender():
    sender = rules.Sender("p0", 3, "w.a@z.test", "w.a.z.test", "/srv/p0")
    relay = _Relay({"10.0.0.2": sender})
    reply, envelope = _mail(Handler(relay), "10.0.0.2")
    assert reply == "250 OK" and envelope.mail_from == "w.a@z.test"
    reply, _ = _mail(Handler(relay), "192.0.2.7")
    assert reply.startswith("550 5.7.1 relaying denied: 192.0.2.7")
    relay.is_declared = False
    reply, _ = _mail(Handler(relay), "10.0.0.2")
    assert reply.startswith("550 5.7.1") and "recipe = slapnode:sendmail" in reply
    relay.is_declared = True
    relay.allowance.count("p0")
    relay.allowance.count("p0")
    assert _mail(Handler(relay), "10.0.0.2")[0].startswith("450 4.7.1")


def test_master_mail_settings_are_checked_and_described_without_the_password():
    from master import mail

    values = mail.settings_from("smtp.example.org:587", None, "grid", "pw", None, "Grid.Example.org")
    assert values == {"smtp_relay": "smtp.example.org:587", "smtp_user": "grid",
                      "smtp_password": "pw", "mail_domain": "grid.example.org"}
    line = mail.describe({**values, "smtp_tls": "starttls"})
    assert "smtp.example.org:587 (STARTTLS, as grid)" in line and "pw" not in line.split("grid")[-1]
    assert "NAME@grid.example.org" in line
    forgotten = mail.settings_from("none", None, None, None, None, None)
    assert forgotten["smtp_relay"] == "" and forgotten["smtp_password"] == ""
    assert "--smtp-relay" in mail.describe({})
    for relay in ("smtp.example.org", "host:0", ":25"):
        with pytest.raises(ValueError, match="e.g."):
            mail.settings_from(relay, None, None, None, None, None)
    with pytest.raises(ValueError):
        mail.settings_from(None, None, None, "two\nlines", None, None)
    assert mail.smarthost_of({"smtp_relay": "[2001:db8::1]:25"}).host == "2001:db8::1"

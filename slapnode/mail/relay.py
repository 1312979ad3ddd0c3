"""The node's SMTP relay for its partitions (aiosmtpd), run in a thread of the agent.

Owns the listening sockets on the bridge's gateway addresses (``mail_port``, 25;
the firewall lets only the bridge reach them), the SMTP dialogue (aiosmtpd's: no
protocol written here), and passing an accepted message to the master, which
holds the smarthost and its credentials (the node never sees them). A message is
accepted only from an address of one of this node's partitions whose instance
declared that it sends mail, within its hourly allowance; its envelope sender is
rewritten to the instance's address and a header naming the instance is put
first. The SMTP answer waits for the master's: a message the smarthost did not
take is refused with a 4xx (try again) or 5xx (do not), never queued and lost.
"""

import asyncio
import concurrent.futures
import json
import os
import socket
import threading
from pathlib import Path

from ..errors import MasterError
from . import rules

IP_FREEBIND = 15                # bind the gateway's IPv6 while its duplicate detection runs
SESSION_TIMEOUT = 60            # seconds a partition may keep a connection idle
FORWARDERS = 4                  # messages passed on to the master at once


def _socket(address, port):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Handler:
    """aiosmtpd's handler: the relay's decisions (``rules``) at each step."""

    def __init__(self, relay):
        self.relay = relay

    def _sender(self, session):
        return self.relay.senders.get(session.peer[0])

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        sender = self._sender(session)
        if sender is None:
            return rules.not_a_partition(session.peer[0])
        if not self.relay.declared(sender):
            return rules.not_declared(sender)
        next_at = self.relay.allowance.next_at(sender.reference)
        if next_at is not None:
            return rules.too_many(self.relay.allowance.per_hour, next_at)
        envelope.mail_from = sender.mail_from       # the instance's address, whatever was said
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= rules.MAX_RECIPIENTS:
            return f"452 4.5.3 at most {rules.MAX_RECIPIENTS} recipients per message"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        sender = self._sender(session)
        if sender is None or sender.mail_from != envelope.mail_from:
            return "451 4.3.0 this partition's instance changed; send the message again"
        allowance = self.relay.allowance
        next_at = allowance.next_at(sender.reference)
        if next_at is not None:
            return rules.too_many(allowance.per_hour, next_at)
        allowance.count(sender.reference)           # counted as it is tried: no flood by retries
        self.relay.save_allowance()
        message = rules.with_header(envelope.original_content or envelope.content,
                                    rules.instance_header(sender.hostname, sender.instance_id,
                                                          self.relay.computer))
        loop = asyncio.get_running_loop()
        status, answer = await loop.run_in_executor(self.relay.pool, self.relay.pass_on, sender,
                                                    list(envelope.rcpt_tos), message)
        if status is None:
            return f"250 2.0.0 OK: sent from {answer['sender']} to {answer['recipients']} recipient(s)"
        return rules.after_master(status, answer)


class Relay:
    """The relay: started by the agent once its first desired state is known, fed the
    partitions that may send (``update``) after each pass, stopped with the agent."""

    def __init__(self, config, client, say=None):
        from ..client import Client

        self.config = config
        self.say = say or (lambda message: None)
        self.client_args = (client.master, client.token, client.ca_file)
        self.local = threading.local()
        self.senders = {}
        self.computer = ""
        self.path = Path(config.state_dir) / "mail-sent.json"
        self.allowance = rules.Allowance(config.mail_per_hour, self._load())
        self.pool = concurrent.futures.ThreadPoolExecutor(FORWARDERS, "mail")
        self.loop = None
        self.thread = None
        self.Client = Client

    def _load(self):
        try:
            state = json.loads(self.path.read_text())
            return {str(k): [float(t) for t in v][-10000:] for k, v in state.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def save_allowance(self):
        tmp = self.path.with_name(".mail-sent.json.tmp")
        try:
            tmp.write_text(json.dumps(self.allowance.state()))
            os.replace(tmp, self.path)
        except OSError as exc:
            self.say(f"mail: the hourly counts are not kept ({exc})")

    def pass_on(self, sender, recipients, message):
        """(None, answer) when the master passed the message on, else (HTTP status or None,
        the reason). Runs in the pool: one client per thread."""
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.Client(*self.client_args[:2], retries=0,
                                                     ca_file=self.client_args[2])
        try:
            return None, client.send_mail(sender.reference, sender.instance_id,
                                          sender.mail_from, recipients, message)
        except MasterError as exc:
            return exc.status, str(exc)

    @staticmethod
    def declared(sender):
        """Read now in the partition (no link followed, a few KiB at most), so that a
        service may send as soon as its deployment started it."""
        from ..deploy.inside import json_files

        return rules.declares(record for _, record in json_files(sender.root, "etc/mail", 4096))

    def update(self, senders, computer):
        self.senders, self.computer = senders, computer

    @property
    def addresses(self):
        from .. import nodeconfig

        return [nodeconfig.gateway_v4(self.config), nodeconfig.gateway_v6(self.config)]

    def start(self):
        """Listen, or raise OSError (the port is taken, the addresses are missing)."""
        from aiosmtpd.smtp import SMTP

        sockets = []
        try:
            for address in self.addresses:
                sockets.append(_socket(str(address), self.config.mail_port))
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        handler = Handler(self)

        def factory():
            return SMTP(handler, hostname=f"relay.{self.config.bridge}", ident="slapnode relay",
                        data_size_limit=rules.MAX_MESSAGE, timeout=SESSION_TIMEOUT,
                        enable_SMTPUTF8=True)

        def run():
            asyncio.set_event_loop(self.loop)
            servers = [self.loop.run_until_complete(self.loop.create_server(factory, sock=sock))
                       for sock in sockets]
            ready.set()
            self.loop.run_forever()
            for server in servers:
                server.close()
                self.loop.run_until_complete(server.wait_closed())
            self.loop.close()

        self.thread = threading.Thread(target=run, name="mail-relay", daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self):
        if self.loop is not None and self.thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.thread = None


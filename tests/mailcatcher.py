"""An SMTP catcher for the mail tests: a real SMTP server (aiosmtpd) that keeps what it
receives, one JSON line per message, with STARTTLS and a password when asked.

    python tests/mailcatcher.py HOST PORT LOG [CERT KEY USER PASSWORD]

It stands for the site's smarthost; the tests run it on loopback or in a network
namespace of their own.
"""

import asyncio
import json
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Keep:
    def __init__(self, log):
        self.log = log

    async def handle_DATA(self, server, session, envelope):
        with open(self.log, "a") as stream:
            stream.write(json.dumps({
                "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
                "user": getattr(session, "caught_user", None),
                "tls": session.ssl is not None,
            }) + "\n")
        return "250 2.0.0 caught"


def main(host, port, log, cert=None, key=None, user=None, password=None):
    context = None
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)

    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and \
            auth_data.login.decode() == user and auth_data.password.decode() == password
        if ok:
            session.caught_user = auth_data.login.decode()
        return AuthResult(success=ok, handled=False)

    def factory():
        return SMTP(Keep(log), hostname="catcher.test", tls_context=context,
                    require_starttls=bool(context), authenticator=check if user else None,
                    auth_required=bool(user), auth_require_tls=bool(context))

    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(factory, host=host, port=int(port)))
    print("ready", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main(*sys.argv[1:])

"""``sendmail`` for partitions: a message on standard input, to the node's relay.

Owns the program's command line (the options programs use with sendmail: ``-t``,
``-i``/``-oi``, ``-f``, ``-F``, recipients), the missing Date and Message-ID, and
the SMTP dialogue with the relay (Python's smtplib), at ``SLAPNODE_SMTP_RELAY``
(HOST:PORT, set by the slapnode:sendmail recipe) or the partition's gateway, port
25. The exit status follows sysexits: 75 try again later, 69 refused, 64 misuse.
It needs nothing but the standard library, and runs as the partition user.
"""

import email.parser
import email.policy
import email.utils
import smtplib
import socket
import struct
import sys

EX_USAGE, EX_DATAERR, EX_UNAVAILABLE, EX_TEMPFAIL = 64, 65, 69, 75
MAX_MESSAGE = 10 << 20
USAGE = ("usage: sendmail [-t] [-i] [-f SENDER] [-F NAME] [RECIPIENT...] < message\n"
         "  e.g. printf 'Subject: hi\\n\\nhello\\n' | sendmail ada@example.org")


def parse_args(argv):
    """(recipients, read recipients from the headers) from sendmail's options. Pure;
    ValueError on a misuse. -f and -F are accepted and have no effect: the node sends
    from the instance's own address."""
    recipients, from_headers, i = [], False, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            recipients += argv[i + 1:]
            break
        if arg in ("-f", "-F", "-r", "-o", "-N", "-R", "-V", "-X", "-B", "-L"):
            if i + 1 >= len(argv):
                raise ValueError(f"option {arg} needs a value")
            i += 2
            continue
        if arg == "-t":
            from_headers = True
        elif arg.startswith("-") and arg[1:2] in "ifFrobBNRvVXLUG" and len(arg) > 1:
            pass                # -i, -oi, -oem, -fADDR, -bm, -v...: nothing to do here
        elif arg.startswith("-"):
            raise ValueError(f"unknown option {arg}")
        else:
            recipients.append(arg)
        i += 1
    return recipients, from_headers


def complete(raw, recipients, from_headers):
    """(message bytes, recipients): with -t the To/Cc/Bcc addresses join the recipients
    and Bcc is taken out; Date and Message-ID are added when missing."""
    message = email.parser.BytesParser(policy=email.policy.SMTP).parsebytes(raw)
    if from_headers:
        for field in ("to", "cc", "bcc"):
            recipients = recipients + [address for _, address in
                                       email.utils.getaddresses(message.get_all(field, []))
                                       if address]
        del message["bcc"]
    if message["date"] is None:
        message["Date"] = email.utils.formatdate(localtime=False)
    if message["message-id"] is None:
        message["Message-ID"] = email.utils.make_msgid(domain=socket.gethostname())
    return message.as_bytes(), list(dict.fromkeys(recipients))


def default_gateway(route_text):
    """The IPv4 default gateway in /proc/net/route's text, or None. Pure."""
    for line in route_text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
            return socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
    return None


def relay_address(environ):
    text = environ.get("SLAPNODE_SMTP_RELAY", "").strip()
    if text:
        host, _, port = text.rpartition(":")
        return host.strip("[]"), int(port)
    try:
        with open("/proc/net/route") as stream:
            gateway = default_gateway(stream.read())
    except OSError:
        gateway = None
    if gateway is None:
        raise ValueError("no route out of this partition; set SLAPNODE_SMTP_RELAY=HOST:PORT")
    return gateway, 25


def main(argv=None, stdin=None, environ=None):
    import os

    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    try:
        recipients, from_headers = parse_args(argv)
        host, port = relay_address(environ)
    except ValueError as exc:
        print(f"sendmail: {exc}\n{USAGE}", file=sys.stderr)
        return EX_USAGE
    raw = (stdin or sys.stdin.buffer).read(MAX_MESSAGE + 1)
    if len(raw) > MAX_MESSAGE:
        print(f"sendmail: the message is larger than {MAX_MESSAGE >> 20} MiB", file=sys.stderr)
        return EX_DATAERR
    message, recipients = complete(raw, recipients, from_headers)
    if not recipients:
        print(f"sendmail: no recipient (give addresses, or -t with a To: header)\n{USAGE}",
              file=sys.stderr)
        return EX_USAGE
    try:
        with smtplib.SMTP(host, port, timeout=120) as smtp:
            # the relay puts the instance's own address in the envelope
            smtp.sendmail(f"sendmail@{socket.gethostname()}", recipients, message)
    except smtplib.SMTPRecipientsRefused as exc:
        code, words = next(iter(exc.recipients.values()))
        return _refused(code, words)
    except smtplib.SMTPResponseException as exc:
        return _refused(exc.smtp_code, exc.smtp_error)
    except (OSError, smtplib.SMTPException) as exc:
        print(f"sendmail: the node's mail relay at {host}:{port} cannot be reached ({exc}); "
              "try again later", file=sys.stderr)
        return EX_TEMPFAIL
    return 0


def _refused(code, words):
    text = words.decode("utf-8", "replace") if isinstance(words, bytes) else str(words)
    print(f"sendmail: the node's mail relay said {code} {text}", file=sys.stderr)
    return EX_TEMPFAIL if 400 <= code < 500 else EX_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())

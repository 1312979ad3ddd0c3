"""Trusting the master: its CA, pinned by fingerprint at enrollment or login.

Owns the one moment a node or a user takes the master's CA: it is read from
``GET /api/v1/ca`` over a TLS connection that is not yet verified (there is nothing
to verify it against yet), accepted only if its SHA-256 fingerprint is the one the
admin gave (``master init`` prints it), then saved; from then on every connection
to that master is verified against that CA only (never the system's trust store,
never unverified). A second request, verified against the CA just taken, checks
that the master's certificate is really for the name in the URL.
"""

import hashlib
import http.client
import ssl
import urllib.parse
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import UsageError

MAX_CA = 64 * 1024


def normal_fingerprint(text):
    """A fingerprint as users paste it (``SHA256:AB:CD…``, any case, with or without
    colons) in the form ``SHA256:<64 hex>``; UsageError otherwise."""
    value = (text or "").strip()
    if value.upper().startswith("SHA256:"):
        value = value[7:]
    value = value.replace(":", "").lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise UsageError(f"{text!r} is not a CA fingerprint: expected SHA256: and 64 hex digits, "
                         "as `slapnode master init` prints it")
    return "SHA256:" + value


def fingerprint_of(pem):
    cert = x509.load_pem_x509_certificate(pem)
    return "SHA256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _unverified_get(url, path):
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE        # bootstrap only: the answer is checked below
    connection = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=10,
                                             context=context)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read(MAX_CA + 1)
        return answer.status, body
    finally:
        connection.close()


def take_ca(url, expected, destination):
    """Fetch the master's CA, check it against ``expected`` and save it to
    ``destination``. Returns the path. UsageError (one line) on any mismatch."""
    if not url.startswith("https://"):
        raise UsageError(f"--ca-fingerprint needs an https:// master URL, not {url!r}")
    expected = normal_fingerprint(expected)
    try:
        status, body = _unverified_get(url, "/api/v1/ca")
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        raise UsageError(f"cannot reach the master at {url} over TLS ({exc}); check the URL "
                         "and that it serves HTTPS") from None
    if status != 200 or len(body) > MAX_CA:
        raise UsageError(f"the master at {url} did not give its CA (HTTP {status}); is it a "
                         "slapnode master serving its own CA?")
    try:
        found = fingerprint_of(body)
    except ValueError:
        raise UsageError(f"the master at {url} answered something that is not a certificate") from None
    if found != expected:
        raise UsageError(f"the master's CA has the fingerprint {found}, not {expected}: check the "
                         "fingerprint `master init` printed (someone may be in between)")
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(body)
    check_name(url, destination)
    return destination


def check_name(url, ca_file):
    """A request verified against ``ca_file``: the certificate must chain to it and be
    for the URL's host. UsageError saying what to check otherwise."""
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=10,
                                             context=context)
    try:
        connection.request("GET", "/api/v1/health")
        connection.getresponse().read()
    except ssl.SSLCertVerificationError as exc:
        raise UsageError(f"the master's certificate does not fit {parts.hostname}: "
                         f"{exc.verify_message}; give the name it was made for (`master init "
                         "--name`) in the URL") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UsageError(f"cannot reach the master at {url} over TLS ({exc})") from None
    finally:
        connection.close()

"""The master's certificate authority and its server certificate.

Owns the keys and certificates in ``<data_dir>/tls/``: the CA (``ca.pem``, ``ca.key``
0600; 10 years), the server certificate for the names and addresses the master is
reached at (``server.pem`` with the CA after it, ``server.key`` 0600; 2 years), and
the fingerprint nodes and users pin (``SHA256:`` and the hex of the CA's DER).
Keys are ECDSA P-256 through the ``cryptography`` library; nothing here is
hand-written cryptography.
"""

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slapnode.pinning import fingerprint_of

CA_LIFETIME = dt.timedelta(days=3650)
SERVER_LIFETIME = dt.timedelta(days=730)


def directory(data_dir):
    return Path(data_dir) / "tls"


def paths(data_dir):
    base = directory(data_dir)
    return {"ca": base / "ca.pem", "ca_key": base / "ca.key", "cert": base / "server.pem",
            "key": base / "server.key"}


def _write(path, data, secret=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
    os.chmod(path, 0o600 if secret else 0o644)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _subject_alt_names(names):
    entries = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def make_ca(common_name, now=None):
    now = now or dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key, ca_cert, public_key, names, lifetime, now=None, server=True, client=False):
    """A certificate for ``names`` (DNS names and IP addresses) signed by the CA."""
    now = now or dt.datetime.now(dt.timezone.utc)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + \
        ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
            .issuer_name(ca_cert.subject).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + lifetime)
            .add_extension(x509.SubjectAlternativeName(_subject_alt_names(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))


_loaded = {}


def load_ca(data_dir):
    """(CA key, CA certificate), parsed once per version of the files (every partition
    certificate is signed with them)."""
    files = paths(data_dir)
    stamp = tuple((st.st_ino, st.st_mtime_ns) for st in
                  (files["ca_key"].stat(), files["ca"].stat()))
    kept = _loaded.get(str(files["ca"]))
    if kept is not None and kept[0] == stamp:
        return kept[1]
    key = serialization.load_pem_private_key(files["ca_key"].read_bytes(), password=None)
    loaded = key, x509.load_pem_x509_certificate(files["ca"].read_bytes())
    _loaded[str(files["ca"])] = (stamp, loaded)
    return loaded


def server_names(data_dir):
    """The names and addresses the current server certificate is for ([] if none)."""
    try:
        cert = x509.load_pem_x509_certificate(paths(data_dir)["cert"].read_bytes())
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []
    return [str(v) for v in alt.get_values_for_type(x509.DNSName)] + \
        [str(v) for v in alt.get_values_for_type(x509.IPAddress)]


def ensure(data_dir, names, title="slapnode master"):
    """The CA (made once, kept) and a server certificate for ``names`` (made again when
    the names change). Returns the CA's fingerprint."""
    files = paths(data_dir)
    directory(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    if not files["ca"].exists() or not files["ca_key"].exists():
        key, cert = make_ca(f"{title} CA")
        _write(files["ca_key"], _key_pem(key), secret=True)
        _write(files["ca"], cert.public_bytes(serialization.Encoding.PEM))
    ca_key, ca_cert = load_ca(data_dir)
    names = list(dict.fromkeys(names))
    if sorted(server_names(data_dir)) != sorted(names) or not files["key"].exists():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(ca_key, ca_cert, key.public_key(), names, SERVER_LIFETIME)
        _write(files["key"], _key_pem(key), secret=True)
        _write(files["cert"], cert.public_bytes(serialization.Encoding.PEM)
               + ca_cert.public_bytes(serialization.Encoding.PEM))
    return fingerprint_of(files["ca"].read_bytes())

"""A partition's TLS certificate, node side.

Owns the files in ``<partition>/etc/tls/`` (``key.pem`` 0600 and ``cert.pem``, ``ca.pem``,
the partition user's, written by root through descriptors, never through a link): a
fresh key is made here (it never leaves the node), its request is signed by the master's
CA for the instance's name and addresses, and the certificate is renewed when a third of
its life is left. The instance profile finds the paths in ``[slap-configuration]``
(``cert-file``, ``key-file``, ``ca-file``); services that reload the certificate when it
changes (the shipped hello does) need no restart.
"""

import datetime as dt

from .. import safefs

TLS_DIR = "etc/tls"


def paths(root):
    base = f"{root}/{TLS_DIR}"
    return {"cert-file": f"{base}/cert.pem", "key-file": f"{base}/key.pem",
            "ca-file": f"{base}/ca.pem"}


def due(record, instance_id, now):
    """Whether the partition needs a (new) certificate. Pure: ``record`` is the agent's."""
    cert = record.get("certificate") or {}
    if cert.get("instance_id") != instance_id:
        return True
    issued = dt.datetime.fromisoformat(cert["issued"])
    not_after = dt.datetime.fromisoformat(cert["not_after"])
    return now >= issued + (not_after - issued) * 2 / 3


def preload():
    """Import what ``renew`` needs (a quarter of a second): the agent does it in a thread
    when it starts, so that its first deployment does not wait on it. (A broken
    installation is said by ``renew``, where it matters.)"""
    try:
        from cryptography import x509  # noqa: F401
        from cryptography.hazmat.primitives import hashes, serialization  # noqa: F401
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: F401
    except ImportError:
        pass


def renew(client, part, instance_id, now=None):
    """A new key and certificate for the partition; returns what the agent keeps."""
    # (imported here: whoever only needs the paths, `node format` among them, does not pay)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, part.reference)]))
           .sign(key, hashes.SHA256()))
    answer = client.sign_certificate(part.reference, instance_id,
                                     csr.public_bytes(serialization.Encoding.PEM).decode())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with safefs.opened_dir(part.root, "etc", uid=part.uid) as fd:
        safefs.make_dir_at(fd, "tls", part.uid, part.gid, 0o700)
    with safefs.opened_dir(part.root, TLS_DIR, uid=part.uid) as fd:
        safefs.write_at(fd, "ca.pem", answer["ca"].encode(), part.uid, part.gid)
        safefs.write_at(fd, "key.pem", key_pem, part.uid, part.gid, mode=0o600)
        safefs.write_at(fd, "cert.pem", answer["certificate"].encode(), part.uid, part.gid)
    now = now or dt.datetime.now(dt.timezone.utc)
    return {"instance_id": instance_id, "issued": now.isoformat(), "not_after": answer["not_after"]}

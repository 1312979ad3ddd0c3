"""Certificates for partitions, signed by the master's CA.

Owns what a node may get signed: a request (CSR) for the partition that holds the
instance, on that node only, is signed for the instance's DNS name and the
partition's addresses (never for names the node chose), with the master's lifetime
(``PARTITION_LIFETIME``; the node renews a third before the end); each signed
certificate is recorded, and revoked when its instance is destroyed (the CA's revocation
list names it until it expires).
"""

import datetime as dt
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select, update

from . import tls
from .errors import ApiError, BadRequest, NotFound
from .models import Instance, Partition, PartitionCertificate, utcnow

MAX_CSR = 8192
# seconds; SLAPNODE_PARTITION_CERT_SECONDS shortens it (tests of renewal)
PARTITION_LIFETIME = dt.timedelta(
    seconds=int(os.environ.get("SLAPNODE_PARTITION_CERT_SECONDS") or 90 * 86400))


def sign(session, data_dir, computer, partition_ref, instance_id, csr_pem, naming):
    """(certificate PEM, CA PEM, not_after, the record to ``keep``) for the instance in
    ``partition_ref``. Reads only: the signing happens outside any write transaction
    (on SQLite one writer at a time: a burst of requests must not queue behind it)."""
    if data_dir is None or not tls.paths(data_dir)["ca_key"].exists():
        raise ApiError("this master has no CA of its own; partitions get no certificate",
                       status=409)
    partition = session.scalars(select(Partition).where(
        Partition.computer_id == computer.id, Partition.reference == partition_ref)).first()
    if partition is None or partition.instance_id != instance_id:
        raise NotFound(f"partition {partition_ref!r} of this computer does not hold "
                       f"instance {instance_id}")
    if len(csr_pem) > MAX_CSR:
        raise BadRequest("certificate request too large")
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise BadRequest("not a PEM certificate request") from None
    if not csr.is_signature_valid:
        raise BadRequest("the certificate request's signature does not verify")
    instance = session.get(Instance, instance_id)
    names = [n for n in (naming.name_of(instance.hostname), partition.ipv4, partition.ipv6) if n]
    if not names:
        raise ApiError("the instance has no name or address to certify yet", status=409)
    ca_key, ca_cert = tls.load_ca(data_dir)
    cert = tls.issue(ca_key, ca_cert, csr.public_key(), names, PARTITION_LIFETIME)
    record = PartitionCertificate(instance_id=instance_id, serial=format(cert.serial_number, "x"),
                                  names=names, not_after=cert.not_valid_after_utc)
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            ca_cert.public_bytes(serialization.Encoding.PEM).decode(), cert.not_valid_after_utc,
            record)


def keep(session, computer_id, partition_ref, instance_id, record):
    """Record a certificate ``sign`` issued (for the revocation list), if the partition
    still holds the instance; NotFound otherwise (it was destroyed meanwhile: the
    certificate is not handed out)."""
    held = session.scalars(select(Partition.instance_id).where(
        Partition.computer_id == computer_id, Partition.reference == partition_ref)).first()
    if held != instance_id:
        raise NotFound(f"partition {partition_ref!r} of this computer does not hold "
                       f"instance {instance_id}")
    session.add(record)


def revoke(session, instance_id):
    """The instance is gone: its certificates are revoked."""
    session.execute(update(PartitionCertificate).where(
        PartitionCertificate.instance_id == instance_id, PartitionCertificate.revoked_at.is_(None))
        .values(revoked_at=utcnow()))


CRL_LIFETIME = dt.timedelta(days=1)


def revocation_list(session, data_dir, now=None):
    """The CA's certificate revocation list (PEM), signed now and good for a day: the
    revoked partition certificates that have not expired yet."""
    now = now or utcnow()
    ca_key, ca_cert = tls.load_ca(data_dir)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now).next_update(now + CRL_LIFETIME))
    for serial, revoked_at in session.execute(
            select(PartitionCertificate.serial, PartitionCertificate.revoked_at)
            .where(PartitionCertificate.revoked_at.is_not(None),
                   PartitionCertificate.not_after > now)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(int(serial, 16))
            .revocation_date(revoked_at).build())
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM).decode()

"""The master over HTTPS with its own CA, pinned by fingerprint: a node and a user
take it once, then trust it only; a wrong fingerprint, a certificate for another
name, or a client that pinned nothing are refused with a line that says what to check."""

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from slapnode.client import Client
from slapnode.errors import MasterError, UsageError
from slapnode.pinning import check_name, take_ca

from .conftest import free_port, run_cli, slapnode_cmd, start_master, stop_process


@pytest.fixture(scope="module")
def tls_master():
    """A master serving HTTPS for 127.0.0.1 only (its own CA)."""
    base = Path(tempfile.mkdtemp(prefix="slapnode-tls-"))
    data_dir = base / "master"
    proc = None
    try:
        proc, url, token, fingerprint = start_master(data_dir, tls=True, names=["127.0.0.1"])
        yield {"url": url, "token": token, "fingerprint": fingerprint, "data": data_dir}
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(base, ignore_errors=True)


def test_init_prints_the_fingerprint_of_a_ca_kept_private(tls_master):
    assert re.fullmatch(r"SHA256:[0-9a-f]{64}", tls_master["fingerprint"])
    tls = tls_master["data"] / "tls"
    assert oct((tls / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tls / "server.key").stat().st_mode & 0o777) == "0o600"


def test_a_pinned_ca_is_trusted_and_nothing_else(tls_master, tmp_path):
    url = tls_master["url"]
    ca = take_ca(url, tls_master["fingerprint"].upper().replace("SHA256:", "sha256:"),
                 tmp_path / "ca.pem")
    client = Client(url, tls_master["token"], ca_file=ca)
    assert client.me()["name"] == "admin"
    # the system's trust store knows nothing of this CA: refused, saying what to do
    with pytest.raises(MasterError, match="certificate is not trusted.*--ca-fingerprint"):
        Client(url, tls_master["token"], retries=0).me()
    # a wrong fingerprint: nothing is saved
    wrong = "SHA256:" + "0" * 64
    with pytest.raises(UsageError, match="not SHA256:0000"):
        take_ca(url, wrong, tmp_path / "other.pem")
    assert not (tmp_path / "other.pem").exists()
    # the certificate is for 127.0.0.1, not for localhost
    other_name = url.replace("127.0.0.1", "localhost")
    with pytest.raises(UsageError, match="does not fit localhost"):
        check_name(other_name, ca)
    with pytest.raises(MasterError, match="certificate"):
        Client(other_name, tls_master["token"], ca_file=ca, retries=0).me()


def test_login_writes_a_client_config_that_pins_the_ca(tls_master, tmp_path):
    env = {"SLAPNODE_CLIENT_CONFIG": str(tmp_path / "client.cfg")}
    bad = run_cli(["login", tls_master["url"], "--ca-fingerprint", "SHA256:" + "1" * 64],
                  token=tls_master["token"], env=env, master="")
    assert bad.exit_code == 2 and "fingerprint" in bad.stderr
    good = run_cli(["login", tls_master["url"], "--ca-fingerprint", tls_master["fingerprint"]],
                   token=tls_master["token"], env=env, master="")
    assert good.exit_code == 0, good.stderr
    who = run_cli(["user", "whoami"], env=env, master="", token="")
    assert who.exit_code == 0 and who.stdout.strip() == "admin (admin)"


def test_a_node_registers_with_the_pinned_ca(tls_master, tmp_path):
    admin = Client(tls_master["url"], tls_master["token"],
                   ca_file=take_ca(tls_master["url"], tls_master["fingerprint"], tmp_path / "a.pem"))
    name = "tls-node-" + tmp_path.name[-6:].lower().replace("_", "-")
    token = admin.create_enrollment_token(name)["token"]
    refused = run_cli(["node", "register", "--master", tls_master["url"], "--token", token,
                       "--ca-fingerprint", "SHA256:" + "2" * 64, "--config",
                       str(tmp_path / "node.cfg"), "--partitions", "0", "--isolation", "user"])
    assert refused.exit_code == 2 and "fingerprint" in refused.stderr
    assert not (tmp_path / "node.cfg").exists()            # and the token was not used
    made = run_cli(["node", "register", "--master", tls_master["url"], "--token", token,
                    "--ca-fingerprint", tls_master["fingerprint"], "--config",
                    str(tmp_path / "node.cfg"), "--partitions", "0", "--isolation", "user"])
    assert made.exit_code == 0, made.stderr
    text = (tmp_path / "node.cfg").read_text()
    assert "ca_file = " in text
    from slapnode import nodeconfig
    from slapnode.cli.node import node_client

    node = node_client(nodeconfig.load(tmp_path / "node.cfg"))
    assert node.desired_state()["computer"] == name


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="builds run as a software user")
def test_a_node_builds_a_release_the_tls_master_serves(tls_master, reachable_dir):
    """The build worker (the software user) fetches the profile from the master over HTTPS:
    it trusts the pinned CA beside the system's authorities."""
    from slapnode.format import plan, users
    from slapnode.software import software_dir
    from slapnode.software.supply import SoftwarePass

    from .test_software_build import node_config

    url, token = tls_master["url"], tls_master["token"]
    ca = take_ca(url, tls_master["fingerprint"], reachable_dir / "ca.pem")
    admin = Client(url, token, ca_file=ca)
    hello = f"{url}/software-releases/hello/software.cfg"
    if hello not in {s["url"] for s in admin.list_software()}:
        admin.add_software(hello, "hello-over-tls")
    name = "tls-build-" + reachable_dir.name[-6:].lower().replace("_", "-")
    enrolled = Client(url, ca_file=ca).enroll(admin.create_enrollment_token(name)["token"])
    node = Client(url, enrolled["credential"], ca_file=ca)
    node.report_partitions([{"reference": "slappart0"}])
    admin.supply(hello, name)
    software_user = f"sn{reachable_dir.name[-6:].lower().replace('_', 'x')}t"
    users.create_user(software_user, "/nonexistent", plan.SOFTWARE_MARK)
    try:
        config = node_config(reachable_dir, software_user, ca_file=str(ca))
        results = SoftwarePass(config, node).run(node.desired_state())
        assert [(r.status, r.how) for r in results] == [("available", "built")], results
        assert (software_dir(config.software_root, hello) / ".completed").exists()
    finally:
        users.delete_user(software_user)


def test_a_partition_serves_https_with_its_own_certificate_renewed_unnoticed(reachable_dir,
                                                                            monkeypatch):
    """hello in a real partition: its certificate is signed by the master's CA for the
    instance's DNS name; a client that trusts only that CA verifies it by name; with a
    30 s lifetime it is renewed (a new certificate, the same server process)."""
    import socket
    import ssl
    import time
    import urllib.parse

    from .conftest import require_lxc
    from .standalone import standalone

    require_lxc()
    monkeypatch.setenv("SLAPNODE_PARTITION_CERT_SECONDS", "30")
    with standalone(reachable_dir) as running:
        running.wait_running()
        user = Client(running.url, running.token, retries=0)
        user.request_instance(title="tls-hello", software="hello", parameters={"name": "Ada"})
        ready = user.call("GET", "/instances/tls-hello", params={"wait": 60})
        assert ready["status"] == "ready", ready
        https = urllib.parse.urlsplit(ready["connection"]["url-https"])
        assert https.hostname == ready["hostname"] and https.port == 8443
        address = ready["ipv4"]
        ca = running.data / "master" / "tls" / "ca.pem"

        def fetch(context, name=https.hostname):
            with socket.create_connection((address, 8443), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname=name) as tls:
                tls.sendall(f"GET / HTTP/1.0\r\nHost: {name}\r\n\r\n".encode())
                body = b""
                while chunk := tls.recv(4096):
                    body += chunk
                return body.decode().split("\r\n\r\n", 1)[1], tls.getpeercert()["serialNumber"]

        pinned = ssl.create_default_context(cafile=str(ca))
        text, first = fetch(pinned)
        assert text == "Hello, Ada!"
        with pytest.raises(ssl.SSLCertVerificationError):
            fetch(ssl.create_default_context())                 # the system's store: no
        with pytest.raises(ssl.SSLCertVerificationError):
            fetch(pinned, "another.name.slapnode.internal")     # another name: no
        server = _processes_with(b"--tls-port\x008443")
        assert server, "hello's server is not running"
        deadline = time.monotonic() + 45
        while True:                                             # renewed at 2/3 of 30 s
            text, serial = fetch(pinned)
            assert text == "Hello, Ada!"
            if serial != first:
                break
            assert time.monotonic() < deadline, "the certificate was not renewed"
            time.sleep(1)
        assert all(p.exists() for p in server)                  # the same server process
        # destroyed: every certificate it had is revoked
        user.change_instance("tls-hello", "destroyed")
        gone = user.call("GET", "/instances/tls-hello", params={"wait": 30})
        assert gone["status"] == "destroyed"
        import sqlite3

        with sqlite3.connect(running.data / "master" / "master.db") as db:
            rows = db.execute("SELECT revoked_at FROM partition_certificates").fetchall()
        assert len(rows) >= 2 and all(revoked for (revoked,) in rows)


def _processes_with(marker):
    """/proc entries of the processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(entry)
            except OSError:
                continue
    return found


def test_a_destroyed_instances_certificate_is_in_the_published_revocation_list(tls_master,
                                                                              tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    url = tls_master["url"]
    ca = take_ca(url, tls_master["fingerprint"], tmp_path / "ca.pem")
    admin = Client(url, tls_master["token"], ca_file=ca, retries=0)
    hello = f"{url}/software-releases/hello/software.cfg"
    if hello not in {s["url"] for s in admin.list_software()}:     # (another test's, maybe)
        admin.add_software(hello, "hello-crl")
    token = admin.create_enrollment_token("crl-node", scope="public")["token"]
    node = Client(url, Client(url, ca_file=ca).enroll(token)["credential"], ca_file=ca, retries=0)
    node.report_partitions([{"reference": "slappart0", "ipv4": "10.9.0.2", "ipv6": "fd00::2"}])
    admin.request_instance(title="crl-web", software=hello, parameters={},
                           node={"computer": "crl-node"})
    [item] = node.desired_state()["partitions"]
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crl")]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    signed = x509.load_pem_x509_certificate(
        node.sign_certificate("slappart0", item["instance"]["id"], csr)["certificate"].encode())
    ca_cert = x509.load_pem_x509_certificate(Path(ca).read_bytes())

    def crl():
        listed = x509.load_pem_x509_crl(admin.get("/api/v1/ca.crl"))
        assert listed.is_signature_valid(ca_cert.public_key())
        return listed
    assert crl().get_revoked_certificate_by_serial_number(signed.serial_number) is None
    admin.change_instance("crl-web", "destroyed")
    node.report(instances=[{"partition": "slappart0", "instance_id": item["instance"]["id"],
                            "status": "destroyed"}])
    assert crl().get_revoked_certificate_by_serial_number(signed.serial_number) is not None

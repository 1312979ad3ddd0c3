"""TLS benchmark: what HTTPS costs the master, side by side with plain HTTP in one run.

Starts two masters on one machine, one with ``--insecure-http`` and one with HTTPS (its
own CA, ECDSA P-256), enrolls a computer on each, and measures with wrk (keep-alive
connections, as nodes hold them):

* unchanged desired-state polls per second over HTTP and over HTTPS, and their ratio;
* new TLS connections per second (one request per connection: the handshake's cost);
* signing one certificate with the master's CA (what each partition's certificate costs).

Target (issue 17): HTTPS >= 0.8 of HTTP's throughput with keep-alive; a certificate < 50 ms.

    .venv/bin/python bench/tls_bench.py [--runs 3] [--seconds 5]
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_master, stop_process  # noqa: E402

from slapnode.client import Client  # noqa: E402

from common import print_rows  # noqa: E402
from master_bench import wrk  # noqa: E402

NEW_CONNECTION_LUA = """
request = function()
  return wrk.format("GET", "/api/v1/health", {["Connection"] = "close"})
end
"""


def enrolled(url, admin, ca=None):
    client = Client(url, admin, ca_file=ca)
    token = client.create_enrollment_token("bench-node", scope="public")["token"]
    credential = Client(url, ca_file=ca).enroll(token)["credential"]
    node = Client(url, credential, ca_file=ca)
    node.report_partitions([{"reference": f"slappart{i}"} for i in range(100)])
    return credential, node.desired_state()["revision"]


def sign_ms(data_dir, count=200):
    from cryptography.hazmat.primitives.asymmetric import ec

    from slapnode.master import tls

    ca_key, ca_cert = tls.load_ca(data_dir)
    keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(count)]
    started = time.perf_counter()
    for i, key in enumerate(keys):
        tls.issue(ca_key, ca_cert, key, [f"i{i}.user.slapnode.internal", "10.0.0.2"],
                  tls.SERVER_LIFETIME)
    return (time.perf_counter() - started) * 1000 / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    base = Path(tempfile.mkdtemp(prefix="slapnode-bench-tls-"))
    procs = []
    try:
        plain_proc, plain_url, plain_admin = start_master(base / "plain")
        procs.append(plain_proc)
        tls_proc, tls_url, tls_admin, _fingerprint = start_master(base / "tls", tls=True,
                                                                  names=["127.0.0.1"])
        procs.append(tls_proc)
        ca = base / "tls" / "tls" / "ca.pem"
        plain_cred, plain_rev = enrolled(plain_url, plain_admin)
        tls_cred, tls_rev = enrolled(tls_url, tls_admin, ca)
        script = base / "close.lua"
        script.write_text(NEW_CONNECTION_LUA)
        polls = {"http": [], "https": []}
        fresh = {"http": [], "https": []}
        for _ in range(args.runs):
            for kind, url, cred, rev in (("http", plain_url, plain_cred, plain_rev),
                                         ("https", tls_url, tls_cred, tls_rev)):
                polls[kind].append(wrk(f"{url}/api/v1/node/desired-state?after={rev}", cred,
                                       args.seconds, 32, 1)[0])
                fresh[kind].append(wrk(f"{url}/api/v1/health", None, args.seconds, 8, 1,
                                       str(script))[0])
        signing = sign_ms(base / "tls")
        rows = []
        http, https = statistics.median(polls["http"]), statistics.median(polls["https"])
        rows.append({"what": "unchanged desired-state polls/s, keep-alive", "http": f"{http:,.0f}",
                     "https": f"{https:,.0f}", "ratio": f"{https / http:.2f}", "target": ">= 0.8",
                     "ok": "yes" if https / http >= 0.8 else "NO"})
        http, https = statistics.median(fresh["http"]), statistics.median(fresh["https"])
        rows.append({"what": "new connections/s (a request each)", "http": f"{http:,.0f}",
                     "https": f"{https:,.0f}", "ratio": f"{https / http:.2f}", "target": "-",
                     "ok": "-"})
        rows.append({"what": "signing a partition certificate (ms)", "http": "-",
                     "https": f"{signing:.2f}", "ratio": "-", "target": "< 50",
                     "ok": "yes" if signing < 50 else "NO"})
        print(f"\nTLS beside plain HTTP, medians of {args.runs} runs of {args.seconds} s")
        print_rows(rows, [("WHAT", "what"), ("HTTP", "http"), ("HTTPS", "https"),
                          ("RATIO", "ratio"), ("TARGET", "target"), ("OK", "ok")])
    finally:
        for proc in procs:
            stop_process(proc)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

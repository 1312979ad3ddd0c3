"""TLS benchmark: what HTTPS costs the master, side by side with plain HTTP in one run.

Starts two masters on one machine, one with ``--insecure-http`` and one with HTTPS (its
own CA, ECDSA P-256), enrolls a computer on each, and measures with wrk (keep-alive
connections, as nodes hold them):

* unchanged desired-state polls per second over HTTP and over HTTPS, and their ratio;
* new TLS connections per second (one request per connection: the handshake's cost);
* signing one certificate with the master's CA (what each partition's certificate costs);
* as root, request -> ready of the hello release on a node of each master (the node pinned
  the HTTPS master's CA; its partitions get a certificate each), runs taken in turns.

Target (issue 17): HTTPS >= 0.8 of HTTP's throughput with keep-alive; a certificate < 50 ms.

    .venv/bin/python bench/tls_bench.py [--runs 3] [--seconds 5] [--no-nodes]
"""

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_master, stop_process  # noqa: E402

from slapnode.client import Client  # noqa: E402

from common import SLAPNODE, make_node, print_rows, remove_node, timed  # noqa: E402
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


class BenchNode:
    """A node of one master with hello built and its agent running."""

    def __init__(self, url, admin, ca, base, prefix, ipv4_range, fingerprint=None):
        isolation = "lxc" if shutil.which("lxc-execute") else "user"
        self.prefix, self.agent, self.config = prefix, None, None
        admin_client = Client(url, admin, ca_file=ca)
        self.hello = f"{url}/software-releases/hello/software.cfg"
        admin_client.add_software(self.hello, "hello")
        self.user = Client(url, admin_client.add_user("bench")["token"], ca_file=ca)
        base.mkdir()
        os.chmod(base, 0o755)
        self.config, path = make_node(url, admin_client, base, prefix, 4, isolation, ipv4_range,
                                      register=("--ca-fingerprint", fingerprint) if fingerprint else ())
        admin_client.supply(self.hello, "bench")
        timed(SLAPNODE + ["node", "software", "--config", str(path)])
        self.log = open(base / "agent.log", "w")
        self.agent = subprocess.Popen(SLAPNODE + ["node", "run", "--config", str(path)],
                                      stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def request_ready(self, title):
        """Seconds from the request to ``ready`` (the master's long-poll on the status),
        then the instance is destroyed and its partition freed."""
        started = time.monotonic()
        self.user.request_instance(title=title, software=self.hello, parameters={"name": title})
        view = self.user.show_instance(title, wait=30)
        while view["status"] != "ready" and time.monotonic() - started < 60:
            view = self.user.show_instance(title, wait=5)
        took = time.monotonic() - started
        if view["status"] != "ready":
            raise RuntimeError(f"{title}: {view['status']} {view.get('reason')}")
        self.user.change_instance(title, "destroyed")
        self.user.show_instance(title, wait=30)
        return took

    def stop(self):
        if self.agent is not None:
            os.killpg(self.agent.pid, signal.SIGTERM)
            self.agent.wait(15)
        if self.config is not None:
            remove_node(self.config, self.prefix)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--no-nodes", action="store_true",
                        help="skip request -> ready (it needs root: users, bridges, containers)")
    args = parser.parse_args()
    nodes = not args.no_nodes and os.geteuid() == 0
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    base = Path(tempfile.mkdtemp(prefix="slapnode-bench-tls-"))
    os.chmod(base, 0o755)          # the nodes' partition and software users go through it
    procs, benches = [], {}
    try:
        plain_proc, plain_url, plain_admin = start_master(base / "plain")
        procs.append(plain_proc)
        tls_proc, tls_url, tls_admin, fingerprint = start_master(base / "tls", tls=True,
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
        ready = {"http": [], "https": []}
        if nodes:
            tag = secrets.token_hex(2)
            benches["http"] = BenchNode(plain_url, plain_admin, None, base / "node-http",
                                        f"sntb{tag}h", "10.247.1.0/24")
            benches["https"] = BenchNode(tls_url, tls_admin, ca, base / "node-https",
                                         f"sntb{tag}s", "10.247.2.0/24", fingerprint)
            for i in range(args.runs + 1):          # the first of each is a warm-up
                for kind, bench in benches.items():
                    took = bench.request_ready(f"r{i}")
                    if i:
                        ready[kind].append(took)
        rows = []
        http, https = statistics.median(polls["http"]), statistics.median(polls["https"])
        rows.append({"what": "unchanged desired-state polls/s, keep-alive", "http": f"{http:,.0f}",
                     "https": f"{https:,.0f}", "ratio": f"{https / http:.2f}", "target": ">= 0.8",
                     "ok": "yes" if https / http >= 0.8 else "NO"})
        http, https = statistics.median(fresh["http"]), statistics.median(fresh["https"])
        rows.append({"what": "new connections/s (a request each)", "http": f"{http:,.0f}",
                     "https": f"{https:,.0f}", "ratio": f"{https / http:.2f}", "target": "-",
                     "ok": "-"})
        if nodes:
            http, https = statistics.median(ready["http"]), statistics.median(ready["https"])
            rows.append({"what": "request -> ready, hello (s)", "http": f"{http:.2f}",
                         "https": f"{https:.2f}", "ratio": f"{http / https:.2f}",
                         "target": "< 1 s", "ok": "yes" if https < 1 else "NO"})
        rows.append({"what": "signing a partition certificate (ms)", "http": "-",
                     "https": f"{signing:.2f}", "ratio": "-", "target": "< 50",
                     "ok": "yes" if signing < 50 else "NO"})
        print(f"\nTLS beside plain HTTP, medians of {args.runs} runs of {args.seconds} s")
        print_rows(rows, [("WHAT", "what"), ("HTTP", "http"), ("HTTPS", "https"),
                          ("RATIO", "ratio"), ("TARGET", "target"), ("OK", "ok")])
    finally:
        for bench in benches.values():
            bench.stop()
        for proc in procs:
            stop_process(proc)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

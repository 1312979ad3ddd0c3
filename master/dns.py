"""The master's DNS zone: every placed instance's name -> its partition's IPv6.

Owns ``master serve --dns HOST:PORT``: a real DNS server (Debian's dnsmasq)
authoritative for the master's zone, run as a child of the master process and
stopped with it, reading a hosts file the master rewrites (atomically, at most
twice a second) whenever placements change. Nodes forward the zone to it (their
own dnsmasq answers for their own partitions first, with A records too); a site
delegates the zone to it so that users outside resolve instance names
(docs/network.md). AAAA only: a partition's private IPv4 means nothing off
its node.
"""

import os
import shutil
import subprocess
import threading
from pathlib import Path

from sqlalchemy import select

from slapnode.errors import SlapnodeError

from .models import Instance, Partition

REWRITE_EVERY = 0.5


def hosts_text(rows, zone):
    """The hosts file: one ``IPV6 FQDN`` line per placed instance. Pure."""
    lines = [f"{ipv6} {relative}.{zone}"
             for relative, ipv6 in sorted(r for r in rows if r[0] and r[1])]
    return "\n".join(lines) + ("\n" if lines else "")


def dnsmasq_args(zone, host, port, hosts_dir, pid_file):
    """dnsmasq's command line for the zone. Pure. (dnsmasq reads every file of
    ``hosts_dir``: nothing else may ever be written there.)"""
    args = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--no-poll", f"--port={port}", f"--hostsdir={hosts_dir}",
            f"--local=/{zone}/", f"--pid-file={pid_file}", "--log-facility=/dev/null",
            "--cache-size=0"]
    if host not in ("0.0.0.0", "::"):
        args += [f"--listen-address={host}", "--bind-interfaces"]
    if os.geteuid() == 0:
        args.append("--user=nobody")
    return args


class ZoneServer:
    def __init__(self, master, data_dir, listen):
        """``listen``: (host, port)."""
        if not shutil.which("dnsmasq"):
            raise SlapnodeError("--dns needs dnsmasq (apt-get install dnsmasq-base)")
        self.master = master
        self.host, self.port = listen
        from slapnode.proc import runtime_dir

        # dnsmasq reads the zone after dropping its privileges: not in the 0700 data dir
        self.dir = runtime_dir("master-dns", data_dir)
        self.hosts = self.dir / "hosts"         # dnsmasq reads every file there: zone only
        self.hosts.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chmod(self.hosts, 0o755)
        self.dirty = threading.Event()
        self.stopping = threading.Event()
        self.process = None
        self.thread = None

    def start(self):
        self.rewrite()
        errors = self.dir / "dnsmasq.err"
        with open(errors, "wb") as err:
            self.process = subprocess.Popen(
                dnsmasq_args(self.master.naming.zone, self.host, self.port, self.hosts,
                             self.dir / "dnsmasq.pid"),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            self.process.wait(0.3)          # a bad address or a port in use: said at once
        except subprocess.TimeoutExpired:
            pass
        else:
            message = errors.read_text(errors="replace").strip().splitlines()
            raise SlapnodeError(f"the DNS server did not start: "
                                f"{message[-1] if message else 'exit ' + str(self.process.returncode)}")
        self.master.placements_changed.append(self.dirty.set)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping.is_set():
            if self.dirty.wait(1.0):
                self.dirty.clear()
                try:
                    self.rewrite()
                except Exception:       # the database may be away; the next change retries
                    self.dirty.set()
                self.stopping.wait(REWRITE_EVERY)

    def rewrite(self):
        with self.master.read() as session:
            rows = session.execute(select(Instance.hostname, Partition.ipv6)
                                   .join(Partition, Partition.instance_id == Instance.id)
                                   .where(Instance.hostname.is_not(None))).all()
        text = hosts_text([(r[0], r[1]) for r in rows], self.master.naming.zone)
        path = self.hosts / "zone"
        if path.exists() and path.read_text() == text:
            return
        tmp = self.dir / ".zone.tmp"        # outside the hosts dir: renamed into it whole
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def stop(self):
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(5)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

"""Masters on the LAN, in the line of BonjourGrid: DNS-SD over multicast DNS.

Owns the service type (``_slapnode._tcp.local.``), what a master announces (its
name, its URL, its CA's fingerprint, in TXT records; ``master serve --advertise``)
and what ``node register --discover`` finds in a few seconds of browsing
(python-zeroconf: the protocol is a library's). What mDNS says is not
authenticated: anyone on the LAN can announce a master, so the CA fingerprint a
node pins is the one the admin gave (``--ca-fingerprint``) when there is one, and
the enrollment token is still required.
"""

import socket
import time
from dataclasses import dataclass

SERVICE = "_slapnode._tcp.local."


@dataclass(frozen=True)
class Found:
    name: str
    url: str
    fingerprint: str


def properties(url, fingerprint):
    """The TXT records of a master's announcement. Pure."""
    return {"url": url, "ca": fingerprint or "", "v": "1"}


def found_from(name, props):
    """A Found from a service's name and TXT properties (bytes), or None. Pure."""
    def text(key):
        value = props.get(key.encode()) if isinstance(next(iter(props), b""), bytes) \
            else props.get(key)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")
    url = text("url")
    if not url.startswith(("http://", "https://")):
        return None
    label = name[:-len("." + SERVICE)] if name.endswith("." + SERVICE) else name
    return Found(label, url, text("ca"))


class Advertiser:
    """A master's announcement, for as long as it serves."""

    def __init__(self, name, url, fingerprint, address, port):
        self.name, self.url, self.fingerprint = name, url, fingerprint
        self.address, self.port = address, port
        self.zeroconf = None
        self.info = None

    def start(self):
        from zeroconf import ServiceInfo, Zeroconf

        self.info = ServiceInfo(SERVICE, f"{self.name}.{SERVICE}",
                                addresses=[socket.inet_pton(
                                    socket.AF_INET6 if ":" in self.address else socket.AF_INET,
                                    self.address)],
                                port=self.port, properties=properties(self.url, self.fingerprint),
                                server=f"{socket.gethostname()}.local.")
        self.zeroconf = Zeroconf(interfaces=[self.address])
        self.zeroconf.register_service(self.info, allow_name_change=True)

    def stop(self):
        if self.zeroconf is not None:
            try:
                self.zeroconf.unregister_service(self.info)
            finally:
                self.zeroconf.close()
            self.zeroconf = None


def browse(seconds=3.0):
    """The masters announced on the LAN within ``seconds``, by name."""
    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

    zeroconf = Zeroconf()
    names = set()

    def changed(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            names.add(name)
    try:
        ServiceBrowser(zeroconf, SERVICE, handlers=[changed])
        time.sleep(seconds)
        found = {}
        for name in sorted(names):
            info = zeroconf.get_service_info(SERVICE, name, timeout=2000)
            if info is not None:
                item = found_from(name, info.properties)
                if item is not None:
                    found[item.name] = item
        return found
    finally:
        zeroconf.close()

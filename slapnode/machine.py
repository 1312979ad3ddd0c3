"""Facts about this machine, read without changing anything.

Owns capacity detection (CPUs, RAM, disk, architecture, distribution), the
networks already configured here (so that our ranges never overlap them), the
machine's global IPv6 prefix if it has one, and the machine id.
"""

import ipaddress
import os
import platform
import shutil


def capacity(path="/"):
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    disk = shutil.disk_usage(path if os.path.exists(path) else "/")
    return {
        "cpus": os.cpu_count() or 1,
        "ram_mb": pages // (1024 * 1024),
        "disk_gb": disk.total // (1024 ** 3),
        "arch": platform.machine(),
        "distribution": distribution(),
    }


def distribution():
    """'debian-12' style, from /etc/os-release."""
    values = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as stream:
            for line in stream:
                key, sep, value = line.strip().partition("=")
                if sep:
                    values[key] = value.strip('"')
    except OSError:
        return platform.system().lower()
    name = values.get("ID", "linux")
    version = values.get("VERSION_ID", "")
    return f"{name}-{version}" if version else name


def machine_id():
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="ascii") as stream:
                value = stream.read().strip()
                if value:
                    return value
        except OSError:
            continue
    return platform.node()


def addresses(exclude=(), netns=None):
    """[(ifname, ipaddress.ip_interface)] of the addresses configured on the machine."""
    from .format.network import open_ipr

    result = []
    with open_ipr(netns) as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for addr in ipr.get_addr():
            name = names.get(addr["index"], "")
            if name in exclude:
                continue
            result.append((name, ipaddress.ip_interface(
                f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")))
    return result


def other_networks(exclude=(), netns=None):
    """Networks of the addresses on the machine outside ``exclude`` (our bridge)."""
    return [iface.network for name, iface in addresses(exclude, netns) if name != "lo"]


def global_ipv6(netns=None):
    """(ifname, address, prefixlen) of a global IPv6 address, or None."""
    from .nodeconfig import is_global_v6

    for name, iface in addresses(netns=netns):
        if iface.version == 6 and is_global_v6(iface.ip) and iface.network.prefixlen <= 64:
            return name, str(iface.ip), iface.network.prefixlen
    return None

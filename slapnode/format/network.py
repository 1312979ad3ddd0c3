"""The node's network, through netlink (pyroute2): the effects.

Owns the bridge, its addresses, the partitions' tap interfaces and, with a
global IPv6 prefix, the NDP proxy entries on the uplink. Never touches an
interface or an address outside what the config names: the bridge is only
created and deleted when ``bridge_type = bridge``; only addresses inside our
ranges and taps of our name pattern are ever removed.
"""

import contextlib
import importlib
import importlib.util
import ipaddress
import sys
import threading

from ..errors import SlapnodeError

IFA_F_NODAD = 0x02          # usable at once: no duplicate address detection delay
NTF_PROXY = 0x08            # a proxy neighbour entry (answer NDP for this address)
_LEAN_LOCK = threading.RLock()


def _lean_pyroute2():
    """Let ``pyroute2.iproute`` be imported without the package's ``__init__``, which
    imports all of pyroute2 (NDB, IPDB, conntrack, nl80211, plan9 …): 0.1–0.15 s of every
    `node format` on a 2-core machine, for classes it never uses. The package module is
    made from its spec but not run; the first name asked of it that is not a submodule
    (``from pyroute2 import NDB``) runs its ``__init__`` then, so other code sees the
    whole package as before. Does nothing when pyroute2 is already imported."""
    with _LEAN_LOCK:
        spec = None if "pyroute2" in sys.modules else importlib.util.find_spec("pyroute2")
        if spec is None or spec.loader is None:
            return                  # imported already, or missing (the import says so)
        package = importlib.util.module_from_spec(spec)

        def whole(name):
            try:
                return importlib.import_module(f"pyroute2.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"pyroute2.{name}":
                    raise
            with _LEAN_LOCK:            # (once, whichever thread asks first)
                if package.__dict__.get("__getattr__") is whole:
                    del package.__getattr__
                    spec.loader.exec_module(package)
            return getattr(package, name)
        package.__getattr__ = whole
        sys.modules["pyroute2"] = package


@contextlib.contextmanager
def open_ipr(netns=None):
    """An IPRoute on this machine, or inside network namespace ``netns``."""
    _lean_pyroute2()
    from pyroute2.iproute import IPRoute, NetNS

    ipr = NetNS(netns) if netns else IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def link_index(ipr, name):
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def link_kind(ipr, index):
    link = ipr.get_links(index)[0]
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def ensure_bridge(ipr, config):
    """The bridge's index; created (type bridge) if missing, and up."""
    index = link_index(ipr, config.bridge)
    if index is None:
        if config.bridge_type == "existing":
            raise SlapnodeError(f"interface {config.bridge!r} does not exist (bridge_type = "
                                "existing); create it or set bridge_type = bridge")
        ipr.link("add", ifname=config.bridge, kind="bridge")
        index = link_index(ipr, config.bridge)
    elif config.bridge_type == "bridge" and link_kind(ipr, index) != "bridge":
        raise SlapnodeError(f"interface {config.bridge!r} exists and is not a bridge; "
                            "choose another --bridge")
    link = ipr.get_links(index)[0]
    if link["flags"] & 1 == 0:      # IFF_UP
        ipr.link("set", index=index, state="up")
    return index


def bridge_addresses(ipr, index):
    return {ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            for a in ipr.get_addr(index=index)
            if not ipaddress.ip_address(a.get_attr("IFA_ADDRESS")).is_link_local}


def add_address(ipr, index, iface):
    kwargs = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
    if iface.version == 6:
        kwargs["IFA_FLAGS"] = IFA_F_NODAD
    try:
        ipr.addr("add", **kwargs)
    except Exception as exc:     # pyroute2 NetlinkError: EEXIST is fine (a race with ourselves)
        if getattr(exc, "code", None) != 17:
            raise


def remove_address(ipr, index, iface):
    try:
        ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
    except Exception as exc:
        if getattr(exc, "code", None) not in (99, 19):     # EADDRNOTAVAIL, ENODEV
            raise


def link_names(ipr):
    return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def add_tap(ipr, name, uid, gid, bridge_index):
    if link_index(ipr, name) is None:
        ipr.link("add", ifname=name, kind="tuntap", mode="tap", uid=uid, gid=gid)
    index = link_index(ipr, name)
    ipr.link("set", index=index, master=bridge_index, state="up")


def remove_link(ipr, name):
    index = link_index(ipr, name)
    if index is not None:
        ipr.link("del", index=index)


def write_sysctl(name, value, netns=None):
    """Set ``net.*`` sysctl ``name`` (dotted), inside ``netns`` if given."""
    path = "/proc/sys/" + name.replace(".", "/")
    if not netns:
        with open(path, "w") as stream:
            stream.write(str(value))
        return
    _lean_pyroute2()
    from pyroute2 import netns as nsmod

    nsmod.pushns(netns)     # /proc/sys/net/* shows the namespace of whoever opens it
    try:
        with open(path, "w") as stream:
            stream.write(str(value))
    finally:
        nsmod.popns()


def set_ndp_proxy(ipr, uplink, addresses, present=True, netns=None):
    """Answer neighbour solicitations on ``uplink`` for partition addresses."""
    index = link_index(ipr, uplink)
    if index is None:
        raise SlapnodeError(f"uplink {uplink!r} (ipv6_uplink) does not exist")
    if present:
        write_sysctl(f"net.ipv6.conf.{uplink}.proxy_ndp", 1, netns)
    for address in addresses:
        try:
            ipr.neigh("add" if present else "del", dst=address, ifindex=index, family=10,
                      flags=NTF_PROXY)
        except Exception as exc:
            if getattr(exc, "code", None) not in (17, 2):      # EEXIST, ENOENT
                raise


def ensure_route(ipr, destination, index):
    """A route for ``destination`` (a network) through the bridge."""
    try:
        ipr.route("add", dst=str(destination), oif=index)
    except Exception as exc:
        if getattr(exc, "code", None) != 17:        # EEXIST: already there
            raise

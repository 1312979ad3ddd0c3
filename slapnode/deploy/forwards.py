"""Ports of partitions published on the node's own IPv4 address.

Owns the node's table of forwarded ports (``<state_dir>/forwards.json``, so it
survives an agent restart): which node port goes to which partition port, chosen
from ``[network] forward_ports``, never given to two partitions, kept while the
partition asks for it and released when it no longer does or is destroyed.
``allocate`` is the pure decision; the rules themselves are the firewall's.
"""

import json
import os
import threading
from pathlib import Path

from .. import nodeconfig

MAX_PER_PARTITION = 16


def allocate(current, wanted, used, span):
    """{name: node port} for ``wanted`` ({name: partition port}): names already
    forwarded keep their node port, new ones take the lowest free port of ``span``
    not in ``used`` (the node ports other partitions hold). Pure. Raises
    ValueError when the range is full."""
    result, taken = {}, set(used)
    for name in sorted(wanted):
        keep = (current.get(name) or {}).get("node_port")
        if keep and keep not in taken and span[0] <= keep <= span[1]:
            result[name] = keep
            taken.add(keep)
    for name in sorted(wanted):
        if name in result:
            continue
        port = next((p for p in range(span[0], span[1] + 1) if p not in taken), None)
        if port is None:
            raise ValueError(f"no free port left in forward_ports {span[0]}-{span[1]}")
        result[name] = port
        taken.add(port)
    return result


class Forwards:
    def __init__(self, config):
        self.config = config
        self.path = Path(config.state_dir) / "forwards.json"
        self.lock = threading.Lock()
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def _save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, sort_keys=True))
        os.replace(tmp, self.path)

    def update(self, reference, ipv4, wanted):
        """Make ``reference``'s forwards what it declares ({name: port}). Returns
        (changed, {name: node port})."""
        wanted = dict(list(sorted(wanted.items()))[:MAX_PER_PARTITION])
        span = nodeconfig.parse_port_range(self.config.forward_ports)
        with self.lock:
            current = self.data.get(reference, {})
            used = {entry["node_port"] for ref, entries in self.data.items() if ref != reference
                    for entry in entries.values()}
            ports = allocate(current, wanted, used, span)
            new = {name: {"port": wanted[name], "node_port": ports[name], "ipv4": ipv4}
                   for name in wanted}
            changed = new != current
            if changed:
                if new:
                    self.data[reference] = new
                else:
                    self.data.pop(reference, None)
                self._save()
        return changed, ports

    def drop(self, reference):
        with self.lock:
            if self.data.pop(reference, None) is None:
                return False
            self._save()
            return True

    def all(self):
        from ..format.firewall import Forward

        with self.lock:
            return [Forward(entry["node_port"], entry["ipv4"], entry["port"])
                    for entries in self.data.values() for entry in entries.values()]

    def of(self, reference):
        with self.lock:
            return {name: entry["node_port"] for name, entry in self.data.get(reference, {}).items()}

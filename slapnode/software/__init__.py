"""Software releases on a node: building them (the engine), and keeping the
ones supplied to this node built (the node's software pass)."""

import hashlib
from pathlib import Path


def software_dir(software_root, url):
    """Where the release named by ``url`` is built: a hash of the URL."""
    return Path(software_root) / hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]

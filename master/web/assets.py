"""Third-party browser assets, fetched once from the npm registry and served by
the master itself (no page ever loads anything from another host).

Owns ``package.json``/``package-lock.json`` beside this file: the packages named
in package.json are fetched at the version and integrity (SHA-512) the lock file
pins, and unpacked into ``node_modules/<name>/`` here, as ``npm ci`` would put them
(``npm ci --ignore-scripts`` does the same job where npm is installed). Only the
named packages are fetched: their own dependencies are not needed for the files
served (swagger-ui-dist's is a telemetry hook).

    python -m slapnode.master.web.assets            # runtime assets (Swagger UI)
    python -m slapnode.master.web.assets --dev      # and the browser tests' (axe-core)
"""

import argparse
import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = HERE / "node_modules"
REGISTRY = "https://registry.npmjs.org"


def wanted(dev=False):
    """{name: (version, integrity)} of the packages to have."""
    manifest = json.loads((HERE / "package.json").read_text())
    lock = json.loads((HERE / "package-lock.json").read_text())["packages"]
    names = list(manifest.get("dependencies", {}))
    if dev:
        names += list(manifest.get("devDependencies", {}))
    result = {}
    for name in names:
        entry = lock[f"node_modules/{name}"]
        result[name] = (entry["version"], entry["integrity"])
    return result


def path_of(name, *parts):
    """Where an installed package's file is (it may be absent: see ``installed``)."""
    return MODULES.joinpath(name, *parts)


def installed(name, version):
    manifest = path_of(name, "package.json")
    try:
        return json.loads(manifest.read_text()).get("version") == version
    except (OSError, ValueError):
        return False


def check_integrity(data, integrity):
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise ValueError(f"unsupported integrity {algorithm!r}")
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != expected:
        raise ValueError("integrity mismatch")


def unpack(name, data):
    """Unpack an npm tarball (its files under ``package/``) into node_modules/<name>."""
    target = path_of(name)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            relative = Path(member.name)
            if not member.isfile() or relative.parts[:1] != ("package",) \
                    or ".." in relative.parts or relative.is_absolute():
                continue            # regular files under package/ only: no links, no devices
            destination = staging.joinpath(*relative.parts[1:])
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.extractfile(member).read())
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def fetch(dev=False, out=sys.stdout):
    import requests

    for name, (version, integrity) in wanted(dev).items():
        if installed(name, version):
            continue
        basename = name.split("/")[-1]
        url = f"{REGISTRY}/{name}/-/{basename}-{version}.tgz"
        print(f"== fetching {name} {version} from the npm registry", file=out)
        answer = requests.get(url, timeout=120)
        answer.raise_for_status()
        try:
            check_integrity(answer.content, integrity)
        except ValueError as exc:
            raise SystemExit(f"{name} {version}: {exc}; package-lock.json and the registry "
                             "disagree, refusing to install it")
        unpack(name, answer.content)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="also the browser tests' assets")
    fetch(parser.parse_args(argv).dev)


if __name__ == "__main__":
    main()

"""``deb`` (Debian packages and their dependency closure, extracted into the part,
never installed into the system) and ``pip`` (a virtualenv with pinned packages)."""

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import Recipe, RecipeError, lines

MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
             "armv7l": "arm-linux-gnueabihf", "i686": "i386-linux-gnu"}


def multiarch():
    return MULTIARCH.get(platform.machine(), f"{platform.machine()}-linux-gnu")


def _library_path(get):
    root = get("location")
    arch = multiarch()
    return ":".join([f"{root}/usr/lib/{arch}", f"{root}/lib/{arch}", f"{root}/usr/lib"])


def _query(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise RecipeError(f"{' '.join(cmd[:2])}: {message}")
    return result.stdout


def closure(packages):
    """The packages and everything they depend on (Depends and Pre-Depends)."""
    out = _query(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                  "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages])
    names = {line.strip() for line in out.splitlines()
             if line and not line.startswith(" ") and not line.startswith("<")}
    return sorted(names)


def base_system():
    """Packages every Debian system has: the Essential ones and what they depend on."""
    out = _query(["dpkg-query", "-W", "-f", "${Package}\t${Essential}\n"])
    essential = [line.split("\t")[0] for line in out.splitlines() if line.endswith("\tyes")]
    return set(closure(essential)) if essential else set()


def package_records(names):
    """{name: {field: value}} of the candidate versions, from apt's lists."""
    out = _query(["apt-cache", "show", "--no-all-versions", *names])
    records, current = {}, {}
    for line in out.splitlines() + [""]:
        if not line.strip():
            if "Package" in current:
                records.setdefault(current["Package"], current)
            current = {}
            continue
        if line[0] != " " and ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    return records


class Deb(Recipe):
    """``packages`` (one per line) and their dependency closure, fetched with apt
    (through the shared download cache) and unpacked with dpkg-deb into the
    part's location. Packages every Debian system has (the Essential ones and
    their dependencies: libc6 …) are left out, as is anything in ``exclude``.

    Sets ``bin-directory`` (…/usr/bin), ``sbin-directory`` and ``library-path``
    (for LD_LIBRARY_PATH) for the instance profiles to use.
    """

    computed = {
        "bin-directory": lambda get: f"{get('location')}/usr/bin",
        "sbin-directory": lambda get: f"{get('location')}/usr/sbin",
        "library-path": _library_path,
    }

    def install(self):
        wanted = lines(self.require("packages"))
        if not shutil.which("apt-cache") or not shutil.which("dpkg-deb"):
            raise RecipeError(f"[{self.name}] the deb recipe needs a Debian or Ubuntu host "
                              "(apt-cache and dpkg-deb)")
        excluded = set(lines(self.options.get("exclude")))
        names = [n for n in closure(wanted) if n not in excluded]
        records = package_records(names)
        missing = [n for n in wanted if n not in records]
        if missing:
            raise RecipeError(f"[{self.name}] no such Debian package: {', '.join(missing)} "
                              "(or the apt lists are missing: run `apt-get update` as root)")
        base = base_system()
        chosen = [r for n, r in records.items() if n in wanted or n not in base]
        debs = self._fetch(chosen)
        location = self.location
        if location.exists():
            shutil.rmtree(location)
        location.mkdir(parents=True)
        for deb in debs:
            self.context.run(["dpkg-deb", "-x", str(deb), str(location)],
                             what=f"[{self.name}] dpkg-deb -x {deb.name}")
        self.context.say(f"[{self.name}] unpacked {len(debs)} packages: "
                         + ", ".join(sorted(r["Package"] for r in chosen)))
        return [str(location)]

    def _fetch(self, records):
        cache = self.context.download_cache / "debs"
        cache.mkdir(parents=True, exist_ok=True)
        wanted = {os.path.basename(r["Filename"]): r for r in records}
        missing = [r for name, r in wanted.items() if not (cache / name).exists()]
        if missing:
            if self.context.offline:
                raise RecipeError(f"[{self.name}] packages missing from the cache and offline")
            tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".fetch-"))
            try:
                specs = [f"{r['Package']}={r['Version']}" for r in missing]
                self.context.run(["apt-get", "download", "-q", *specs], cwd=tmp,
                                 what=f"[{self.name}] apt-get download")
                for deb in tmp.glob("*.deb"):
                    os.replace(deb, cache / deb.name.replace("%3a", ":"))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        paths = []
        for name in wanted:
            path = cache / name
            if not path.exists():
                alternative = cache / name.replace(":", "%3a")
                path = alternative if alternative.exists() else path
            if not path.exists():
                raise RecipeError(f"[{self.name}] apt-get download did not produce {name}")
            paths.append(path)
        return paths


PIN_RE = re.compile(r"^[A-Za-z0-9_.\-\[\],]+==[A-Za-z0-9_.+!\-]+$")


class Pip(Recipe):
    """A virtualenv in the part's location with ``packages`` (one ``name==version``
    per line: pins only, so that a build is repeatable); ``python`` (default the
    interpreter slapnode runs on). Sets ``bin-directory`` and ``python``."""

    computed = {
        "bin-directory": lambda get: f"{get('location')}/bin",
        "python": lambda get: f"{get('location')}/bin/python",
    }

    def install(self):
        packages = lines(self.require("packages"))
        loose = [p for p in packages if not PIN_RE.match(p)]
        if loose:
            raise RecipeError(f"[{self.name}] pin every package as name==version: {', '.join(loose)}")
        python = self.options.get("base-python") or getattr(sys, "_base_executable", sys.executable)
        location = self.location
        if location.exists():
            shutil.rmtree(location)
        self.context.run([python, "-m", "venv", str(location)], what=f"[{self.name}] venv")
        self.context.run([str(location / "bin" / "pip"), "install", "--no-input",
                          "--disable-pip-version-check", *packages],
                         what=f"[{self.name}] pip install")
        return [str(location)]

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


def dependency_graph(packages):
    """{package: [dependencies]} for ``packages`` and everything below them (Depends and
    Pre-Depends; a virtual dependency becomes its first provider)."""
    out = _query(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                  "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages])
    graph, current, virtual = {}, None, False
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            current = None if line.startswith("<") else line.strip()
            if current:
                graph.setdefault(current, [])
            virtual = False
            continue
        if current is None:
            continue
        text = line.strip().lstrip("|")
        if text.startswith(("Depends:", "PreDepends:")):
            target = text.split(":", 1)[1].strip()
            virtual = target.startswith("<")
            if not virtual:
                graph[current].append(target)
        elif virtual and line.startswith("    "):
            graph[current].append(text)         # the first provider of a virtual package
            virtual = False
    return graph


def closure(packages, skip=()):
    """The packages and what they depend on, not descending into ``skip``."""
    graph = dependency_graph(packages)
    seen, todo = set(), list(packages)
    while todo:
        name = todo.pop()
        if name in seen or name in skip:
            continue
        seen.add(name)
        todo.extend(graph.get(name, []))
    return sorted(seen)


def base_system(cache_dir=None):
    """Packages every Debian system has: the Essential ones and what they depend on.
    Remembered in ``cache_dir`` until dpkg's or apt's state changes (it takes seconds)."""
    import json

    stamp = "-".join(str(int(os.stat(p).st_mtime)) for p in ("/var/lib/dpkg/status", "/var/lib/apt/lists")
                     if os.path.exists(p))
    memo = Path(cache_dir) / f"base-system-{stamp}.json" if cache_dir else None
    if memo is not None and memo.exists():
        return set(json.loads(memo.read_text()))
    out = _query(["dpkg-query", "-W", "-f", "${Package}\t${Essential}\n"])
    essential = [line.split("\t")[0] for line in out.splitlines() if line.endswith("\tyes")]
    base = set(closure(essential)) if essential else set()
    if memo is not None:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(sorted(base)))
    return base


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
        base = base_system(self.context.download_cache / "debs")
        excluded = set(lines(self.options.get("exclude")))
        names = closure(wanted, skip=(excluded | base) - set(wanted))
        records = package_records(names)
        missing = [n for n in wanted if n not in records]
        if missing:
            raise RecipeError(f"[{self.name}] no such Debian package: {', '.join(missing)} "
                              "(or the apt lists are missing: run `apt-get update` as root)")
        chosen = list(records.values())
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
                by_package = {r["Package"]: os.path.basename(r["Filename"]) for r in missing}
                for deb in tmp.glob("*.deb"):
                    package = deb.name.split("_", 1)[0]
                    if package in by_package:     # the name apt's lists give (no epoch)
                        os.replace(deb, cache / by_package[package])
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        paths = []
        for name in wanted:
            path = cache / name
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

"""``deb`` (Debian packages and their dependency closure, extracted into the part,
never installed into the system, from the system's suite or another one, made to
run from where they are) and ``pip`` (a virtualenv with pinned packages)."""

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import Recipe, RecipeError, as_bool, lines
from . import apt, elf

MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
             "armv7l": "arm-linux-gnueabihf", "i686": "i386-linux-gnu"}


def multiarch():
    return MULTIARCH.get(platform.machine(), f"{platform.machine()}-linux-gnu")


def _library_path(get):
    root = get("location")
    arch = multiarch()
    return ":".join([f"{root}/usr/lib/{arch}", f"{root}/lib/{arch}", f"{root}/usr/lib"])


def _option(get, name):
    try:
        return get(name).strip()
    except Exception:       # the option is not set
        return ""


def other_suite(suite):
    """Whether ``suite`` (the deb recipe's option) is another suite than the system's."""
    return bool(suite) and suite != apt.system_codename()


def _environment(get):
    """What the programs of a tree from another suite need so that nothing of the
    host's newer or older libraries' data is used: OpenSSL's modules and
    configuration, iconv's modules, a locale every libc has."""
    if not other_suite(_option(get, "suite")):
        return ""
    root, arch = get("location"), multiarch()
    return "\n".join([f"OPENSSL_MODULES={root}/usr/lib/{arch}/ossl-modules",
                      f"OPENSSL_CONF={root}/etc/ssl/openssl.cnf",
                      f"GCONV_PATH={root}/usr/lib/{arch}/gconv", "LANG=C.UTF-8"])


OPENSSL_CNF = """# written by slapnode's deb recipe: OpenSSL's default provider, nothing of the host's
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
[default_sect]
activate = 1
"""


def _query(cmd, options=()):
    result = subprocess.run([cmd[0], *options, *cmd[1:]], capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise RecipeError(f"{' '.join(cmd[:2])}: {message}")
    return result.stdout


def dependency_graph(packages, options=()):
    """{package: [dependencies]} for ``packages`` and everything below them (Depends and
    Pre-Depends; a virtual dependency becomes its first provider). ``options``: apt's
    ``-o`` options (another suite's state)."""
    out = _query(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                  "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
                 options)
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


def closure(packages, skip=(), options=()):
    """The packages and what they depend on, not descending into ``skip``."""
    graph = dependency_graph(packages, options)
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


def package_records(names, options=()):
    """{name: {field: value}} of the candidate versions, from apt's lists."""
    out = _query(["apt-cache", "show", "--no-all-versions", *names], options)
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
    part's location; anything in ``exclude`` is left out.

    ``suite`` (default: the system's): take them from another suite of the Debian
    archive the system uses (e.g. ``trixie`` on Debian 12), through a private apt
    state in the download cache; the closure then includes the C library and
    everything else of the base system it needs.

    ``relocate`` (default: on with another suite): make every unpacked ELF run from
    where it is, with no wrapper and no LD_LIBRARY_PATH: programs get the tree's own
    loader when it has one, every dynamic file a RUNPATH of the tree's library
    directories (see ``elf``); a program that would load a library from outside a
    tree that has its own C library, or that cannot load at all, fails the build.

    Sets ``bin-directory`` (…/usr/bin), ``sbin-directory``, ``library-path`` (the
    tree's library directories) and ``environment`` (KEY=VALUE lines for the
    services of a tree from another suite: OpenSSL's modules and configuration,
    iconv's modules, the locale).
    """

    computed = {
        "bin-directory": lambda get: f"{get('location')}/usr/bin",
        "sbin-directory": lambda get: f"{get('location')}/usr/sbin",
        "library-path": _library_path,
        "environment": _environment,
    }

    def install(self):
        wanted = lines(self.require("packages"))
        if not shutil.which("apt-cache") or not shutil.which("dpkg-deb"):
            raise RecipeError(f"[{self.name}] the deb recipe needs a Debian or Ubuntu host "
                              "(apt-cache and dpkg-deb)")
        suite = self.options.get("suite", "").strip()
        other = other_suite(suite)
        relocating = as_bool(self.options.get("relocate"), default=other)
        excluded = set(lines(self.options.get("exclude")))
        options = []
        if other:
            try:
                state = apt.SuiteState(self.context.download_cache, suite)
                state.ensure(self.context.run, self.context.say, self.context.offline)
            except apt.AptError as exc:
                raise RecipeError(f"[{self.name}] {exc}") from None
            options = state.options
            skip = excluded - set(wanted)
        else:
            skip = (excluded | base_system(self.context.download_cache / "debs")) - set(wanted)
        names = closure(wanted, skip=skip, options=options)
        records = package_records(names, options)
        missing = [n for n in wanted if n not in records]
        if missing:
            where = f"in {suite}" if other else "(or the apt lists are missing: run `apt-get update` as root)"
            raise RecipeError(f"[{self.name}] no such Debian package: {', '.join(missing)} {where}")
        chosen = list(records.values())
        debs = self._fetch(chosen, options)
        location = self.location
        if location.exists():
            shutil.rmtree(location)
        location.mkdir(parents=True)
        for deb in debs:
            self.context.run(["dpkg-deb", "-x", str(deb), str(location)],
                             what=f"[{self.name}] dpkg-deb -x {deb.name}")
        self.context.say(f"[{self.name}] unpacked {len(debs)} packages"
                         + (f" from {suite}" if other else "") + ": "
                         + ", ".join(sorted(r["Package"] for r in chosen)))
        if other:
            ssl = location / "etc" / "ssl"
            ssl.mkdir(parents=True, exist_ok=True)
            (ssl / "openssl.cnf").write_text(OPENSSL_CNF)
        if relocating:
            libc = [d for d in debs if d.name.split("_", 1)[0] == "libc6"]
            self._relocate(location, libc_files(libc[0]) if libc else set(), own_libc=bool(libc))
        return [str(location)]

    def _relocate(self, location, keep, own_libc):
        try:
            rewritten, removed = elf.relative_links(location)
            programs, libraries, loader = elf.relocate(location, multiarch(), keep)
            checked = elf.verify(location, loader or elf.host_loader(location, programs),
                                 programs + libraries, inside_only=own_libc)
        except elf.RelocationError as exc:
            raise RecipeError(f"[{self.name}] {exc}") from None
        broken = sorted(p for p in checked if p in set(programs))
        if broken:
            path = broken[0]
            raise RecipeError(f"[{self.name}] {path} cannot load {', '.join(checked[path])}: "
                              f"add the package that holds it, or exclude fewer "
                              f"({len(broken)} programs cannot load)")
        self.context.say(f"[{self.name}] relocated {len(programs)} programs and {len(libraries)} "
                         f"libraries" + (f" to the loader {loader}" if loader else ""))
        if rewritten or removed:
            self.context.say(f"[{self.name}] {len(rewritten)} absolute links made relative"
                             + (f", {len(removed)} pointing outside the release removed: "
                                + ", ".join(removed[:10]) if removed else ""))
        if checked:
            self.context.say(f"[{self.name}] {len(checked)} libraries cannot load, their "
                             "dependencies were left out: " + ", ".join(sorted(checked)[:20]))

    def _fetch(self, records, options=()):
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
                self.context.say(f"[{self.name}] downloading {len(specs)} packages")
                self.context.run(["apt-get", *options, "download", "-q", *specs], cwd=tmp,
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


def libc_files(deb):
    """The regular files of the C library's package (relative paths): never patched,
    they are the loader and what it loads first."""
    import tarfile

    process = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
            files = {os.path.normpath(m.name) for m in tar if m.isfile()}
    finally:
        process.stdout.close()
        process.wait()
    return files


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

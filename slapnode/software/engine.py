"""Building one software release into its directory: the profile engine at work.

Owns the build of one profile: expand everything first (a profile that does
not parse builds nothing), install parts in order recording each finished
part in ``.installed.json`` (so that a killed build resumes after the last
finished part), reinstall parts whose options changed, remove parts that
left the profile, and write ``.completed`` (the digest of the expanded
profile) last, so that a half-built directory never looks complete.
"""

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from .. import recipes, safefs
from ..profile import expand, parser

COMPLETED = ".completed"
INSTALLED = ".installed.json"
LOG = ".build.log"
DOWNLOAD_CACHE = ".download-cache"


def fetch_url(url):
    import requests

    response = requests.get(url, timeout=60)
    if response.status_code != 200:
        raise OSError(f"HTTP {response.status_code}")
    return response.content


def load_profile(url, directory, download_cache, overrides=None, effects=False, trusted=()):
    raw = parser.load(url, fetch=fetch_url)
    directory = Path(directory)
    builtins = {"buildout": {
        "directory": str(directory),
        "parts-directory": str(directory / "parts"),
        "bin-directory": str(directory / "bin"),
        "download-cache": str(download_cache),
        "software-url": url,
        # what zc.buildout defines and SlapOS profiles refer to (eggs live nowhere
        # else here; the executable is the interpreter slapnode runs on)
        "eggs-directory": str(directory / "eggs"),
        "develop-eggs-directory": str(directory / "develop-eggs"),
        "executable": sys.executable,
    }}
    return expand.Profile(raw, builtins=builtins, computed=recipes.computed_option,
                          overrides=overrides, effects=effects, trusted=trusted)


def completed_digest(directory):
    """The digest a finished build left in ``directory``, or None. Read without
    following a link, at most 256 bytes (root reads it in the software user's
    directory)."""
    directory = Path(directory)
    try:
        data = safefs.read_file(directory.parent, f"{directory.name}/{COMPLETED}", 256)
    except OSError:
        return None
    return data.decode("ascii", "replace").strip() or None


def _options_hash(name, options):
    return hashlib.sha256(json.dumps([name, options], sort_keys=True).encode()).hexdigest()


def _remove_paths(directory, paths):
    directory = Path(directory).resolve()
    for path in paths:
        target = Path(path)
        try:
            target.resolve().relative_to(directory)
        except ValueError:
            continue            # never remove anything outside the release's directory
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _save_installed(path, installed):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(installed, indent=1, sort_keys=True))
    os.replace(tmp, path)


def build(url, directory, download_cache=None, log=None, offline=False, overrides=None,
          trusted=()):
    """Build the profile at ``url`` into ``directory`` (a release's directory, or a
    partition for an instance profile). ``overrides``/``trusted``: see
    ``expand.Profile``. Returns (digest, built: bool)."""
    directory = Path(directory)
    download_cache = Path(download_cache or directory.parent / DOWNLOAD_CACHE)
    profile = load_profile(url, directory, download_cache, overrides, effects=True,
                           trusted=trusted)
    digest = profile.digest()               # pure: expanding for a digest writes nothing
    parts = profile.parts()                 # everything expanded (and checked) first
    if completed_digest(directory) == digest:
        return digest, False
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "parts").mkdir(exist_ok=True)
    completed = directory / COMPLETED
    if completed.exists():
        completed.unlink()
    stream = log or open(directory / LOG, "a", encoding="utf-8")
    context = recipes.Context(directory, download_cache, stream, offline, profile)
    installed_path = directory / INSTALLED
    try:
        installed = json.loads(installed_path.read_text()) if installed_path.exists() else {}
    except ValueError:
        installed = {}
    try:
        context.say(f"== building {url} into {directory}")
        names = [name for name, _ in parts]
        for name in [n for n in installed if n not in names]:
            context.say(f"[{name}] left the profile: removing it")
            _remove_paths(directory, installed.pop(name).get("paths", []))
            _save_installed(installed_path, installed)
        for name, options in parts:
            recipe_class = recipes.find(options["recipe"].strip())
            recipe = recipe_class(context, name, options)
            recipe.given = frozenset(profile.given_options(name))
            digest_of_part = _options_hash(name, options)
            record = installed.get(name)
            if record and record.get("hash") == digest_of_part:
                context.say(f"[{name}] unchanged: update")
                paths = recipe.update() or record.get("paths", [])
            else:
                if record:
                    context.say(f"[{name}] changed: reinstalling")
                    _remove_paths(directory, record.get("paths", []))
                    installed.pop(name)
                    _save_installed(installed_path, installed)
                context.say(f"[{name}] installing ({options['recipe'].strip()})")
                paths = recipe.install() or []
            installed[name] = {"hash": digest_of_part, "paths": [str(p) for p in paths]}
            _save_installed(installed_path, installed)
        tmp = completed.with_name(COMPLETED + ".tmp")
        tmp.write_text(digest + "\n")
        os.replace(tmp, completed)
        context.say(f"== built {url} ({len(parts)} parts)")
    except Exception as exc:
        context.say(f"!! build failed: {exc}")
        raise
    finally:
        if log is None:
            stream.close()
    return digest, True

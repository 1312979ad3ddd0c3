"""Backing the master up and restoring it: ``master backup FILE`` / ``master restore FILE``.

Owns the backup file: one tar.gz (mode 0600: it holds the CA's key and the tokens'
hashes) with a manifest, the database (SQLite through its online backup API, so
a serving master need not stop; PostgreSQL through ``pg_dump`` in its custom
format), and what the data directory holds beside it: ``master.cfg`` (the settings,
the smarthost), ``admin.token`` and ``tls/`` (the CA the nodes pinned: without it
no node would trust the restored master). Restoring refuses to replace a database
that already holds a master unless told to (``force``), reads only the members it
knows (no path from the archive is trusted), and writes the data directory's files
only once the database is in.
"""

import datetime as dt
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from pathlib import Path

from slapnode.errors import SlapnodeError, UsageError

from . import db as dbmod

MANIFEST = "slapnode-backup.json"
FILES = ("master.cfg", "admin.token", "tls/ca.pem", "tls/ca.key", "tls/server.pem",
         "tls/server.key")
SQLITE_MEMBER = "database.sqlite"
PG_MEMBER = "database.pgdump"
FORMAT = 1


def libpq_env(url):
    """The environment pg_dump and pg_restore need for a SQLAlchemy URL (the password
    in PGPASSWORD, never on a command line). Pure."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    env = {"PGHOST": parsed.host or "localhost", "PGPORT": str(parsed.port or 5432),
           "PGUSER": parsed.username or "", "PGDATABASE": parsed.database or "",
           "PGCONNECT_TIMEOUT": "10"}
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    return env


def _run(argv, url, what):
    tool = shutil.which(argv[0])
    if tool is None:
        raise SlapnodeError(f"{argv[0]} is missing: apt-get install postgresql-client "
                            "(of the server's major version)")
    result = subprocess.run([tool, *argv[1:]], capture_output=True, text=True,
                            env={**os.environ, **libpq_env(url)})
    if result.returncode != 0:
        lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
        raise SlapnodeError(f"{what} failed: {lines[-1] if lines else 'exit ' + str(result.returncode)}")
    return result


def _sqlite_path(url):
    return Path(url.split(":///", 1)[-1])


def backup(data_dir, file, url=None):
    """Write the backup of the master in ``data_dir`` to ``file``; returns its manifest."""
    from slapnode import __version__

    data_dir = Path(data_dir)
    url = dbmod.resolve_url(data_dir, url)
    kind = "sqlite" if dbmod.is_sqlite(url) else "postgresql"
    if kind == "sqlite" and not _sqlite_path(url).exists():
        raise UsageError(f"no master database in {data_dir}; check --data-dir")
    with tempfile.TemporaryDirectory(prefix="slapnode-backup-") as tmp:
        tmp = Path(tmp)
        if kind == "sqlite":
            source = sqlite3.connect(f"file:{_sqlite_path(url)}?mode=ro", uri=True)
            target = sqlite3.connect(tmp / SQLITE_MEMBER)
            try:
                with target:
                    source.backup(target)       # a consistent copy while the master serves
            finally:
                source.close()
                target.close()
            member = SQLITE_MEMBER
        else:
            _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges",
                  f"--file={tmp / PG_MEMBER}"], url, "pg_dump")
            member = PG_MEMBER
        manifest = {"format": FORMAT, "database": kind, "slapnode": __version__,
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "files": [name for name in FILES if (data_dir / name).is_file()]}
        out = Path(file)
        partial = out.with_name(f".{out.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as stream, tarfile.open(fileobj=stream, mode="w:gz") as tar:
                body = json.dumps(manifest, indent=1).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode = len(body), 0o600
                tar.addfile(info, io.BytesIO(body))
                tar.add(tmp / member, member)
                for name in manifest["files"]:
                    tar.add(data_dir / name, name)
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return manifest


def _members(file):
    """{name: bytes or a path on disk} of the members restore knows; the rest is ignored."""
    try:
        tar = tarfile.open(file, "r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise UsageError(f"{file} is not a slapnode backup ({exc})") from None
    with tar:
        names = {m.name: m for m in tar.getmembers() if m.isfile()}
        if MANIFEST not in names:
            raise UsageError(f"{file} is not a slapnode backup (no {MANIFEST})")
        manifest = json.loads(tar.extractfile(names[MANIFEST]).read())
        if manifest.get("format") != FORMAT:
            raise UsageError(f"{file} is a backup of format {manifest.get('format')}; this "
                             f"slapnode reads format {FORMAT}")
        wanted = [SQLITE_MEMBER if manifest["database"] == "sqlite" else PG_MEMBER, *FILES]
        return manifest, {name: tar.extractfile(names[name]).read()
                          for name in wanted if name in names}


def _holds_a_master(url):
    from sqlalchemy import create_engine, inspect

    if dbmod.is_sqlite(url) and not _sqlite_path(url).exists():
        return False
    engine = create_engine(url)
    try:
        return inspect(engine).has_table("alembic_version")
    finally:
        engine.dispose()


def restore(file, data_dir, url=None, force=False):
    """Restore the backup ``file`` into ``data_dir`` (and the database ``url``, or the one
    the backup's master.cfg names, or SQLite in ``data_dir``). Returns the manifest."""
    manifest, members = _members(file)
    data_dir = Path(data_dir)
    saved = dbmod.parse_settings(members["master.cfg"].decode()) if "master.cfg" in members else {}
    # a PostgreSQL master comes back in its database (or --db); SQLite in the new data dir
    pg_saved = saved.get("db") if saved.get("db") and not dbmod.is_sqlite(saved["db"]) else None
    url = url or pg_saved or dbmod.default_url(data_dir)
    kind = "sqlite" if dbmod.is_sqlite(url) else "postgresql"
    if kind != manifest["database"]:
        raise UsageError(f"the backup holds a {manifest['database']} database; give --db a "
                         f"{manifest['database']} URL to restore it into")
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    if not force and (_holds_a_master(url) or any((data_dir / n).exists() for n in FILES)):
        raise UsageError(f"{data_dir if kind == 'sqlite' else 'the database'} already holds a "
                         "master: restore into a new --data-dir (and database), or give --force "
                         "to replace it")
    if kind == "sqlite":
        target = _sqlite_path(url)
        partial = target.with_name(f".{target.name}.restoring")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(members[SQLITE_MEMBER])
        for stale in (target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
            stale.unlink(missing_ok=True)
        os.replace(partial, target)
    else:
        with tempfile.NamedTemporaryFile(prefix="slapnode-restore-", suffix=".pgdump") as dump:
            dump.write(members[PG_MEMBER])
            dump.flush()
            _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges",
                  "--single-transaction", f"--dbname={libpq_env(url)['PGDATABASE']}", dump.name],
                 url, "pg_restore")
    for name in FILES:
        if name in members:
            path = data_dir / name
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as stream:
                stream.write(members[name])
    # the restored master.cfg names the database restored into (none: SQLite in data_dir)
    dbmod.save_settings(data_dir, db=url if url != dbmod.default_url(data_dir) else "")
    return manifest

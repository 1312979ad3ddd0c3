"""Database engines, sessions and migrations.

Owns how the master talks to its database: the URL of a data directory, the
SQLite pragmas (WAL, foreign keys, busy timeout), the split between read
transactions and write transactions (on SQLite a write transaction starts
with ``BEGIN IMMEDIATE`` so that two writers queue instead of deadlocking),
and running the Alembic migrations.
"""

import contextlib
import os
import threading
from pathlib import Path

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.orm import sessionmaker

SQLITE_NAME = "master.db"
CONFIG_NAME = "master.cfg"


def default_url(data_dir):
    return f"sqlite:///{Path(data_dir).resolve() / SQLITE_NAME}"


# what master.cfg holds: the database, the zone, the certificate's names, the smarthost
SAVED = ("db", "domain", "names", "smtp_relay", "smtp_tls", "smtp_user", "smtp_password",
         "smtp_ca_file", "mail_domain")


def read_settings(data_dir):
    """What ``master init`` saved in master.cfg: {"db": URL, "domain": zone, "names": the
    names and addresses of its certificate, comma-separated}, as given."""
    saved = Path(data_dir) / CONFIG_NAME
    return parse_settings(saved.read_text()) if saved.exists() else {}


def parse_settings(text):
    """master.cfg's text -> {key: value} of the keys it may hold. Pure."""
    settings = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in SAVED:
            settings[key.strip()] = value.strip()
    return settings


def resolve_url(data_dir, url=None):
    """The database URL: ``--db``, else the one ``master init`` saved, else SQLite."""
    return url or read_settings(data_dir).get("db") or default_url(data_dir)


def save_settings(data_dir, **values):
    """Remember settings for ``master serve`` (a URL or the smarthost's credentials may
    hold a password: 0600). A value of None keeps what was saved, "" forgets it."""
    settings = {**read_settings(data_dir), **{k: v for k, v in values.items() if v is not None}}
    settings = {k: v for k, v in settings.items() if v != ""}
    path = Path(data_dir) / CONFIG_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write("[master]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())))


def is_sqlite(url):
    return str(url).startswith("sqlite")


def _sqlite_engine(url, begin):
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                           pool_size=20, max_overflow=20)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event, not the driver, start transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql(begin)

    return engine


class Database:
    """The master's two session factories over one database.

    ``read()`` for queries, ``write()`` for anything that changes rows. On
    PostgreSQL both use one engine; on SQLite writes take the write lock
    up front (``BEGIN IMMEDIATE``), and writers of this process queue on a
    lock first: SQLite's own busy handler makes waiters sleep up to 100 ms,
    which would leave the database idle while requests wait.
    """

    def __init__(self, url):
        self.url = url
        self._writer = threading.Lock() if is_sqlite(url) else contextlib.nullcontext()
        if is_sqlite(url):
            self.read_engine = _sqlite_engine(url, "BEGIN")
            self.write_engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
        else:
            self.read_engine = self.write_engine = create_engine(
                url, pool_size=20, max_overflow=20, pool_pre_ping=True)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    @property
    def dialect(self):
        return self.write_engine.dialect.name

    @contextlib.contextmanager
    def read(self):
        with self._read() as session:
            yield session

    @contextlib.contextmanager
    def write(self):
        """A session in one transaction: committed on success, rolled back on error."""
        with self._writer, self._write() as session, session.begin():
            yield session

    def dispose(self):
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()


def alembic_config(url):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(db, revision="head"):
    """Bring the schema to ``revision`` (the newest by default). Safe to run again.

    On SQLite, foreign keys are off while migrating: Alembic's batch mode copies a
    table and drops the old one, and with foreign keys on that drop would cascade
    (deleting every token with its users table). They are checked afterwards and
    the migration rolls back if any is broken."""
    from alembic import command

    with db.write_engine.connect() as connection:
        raw = connection.connection.driver_connection if is_sqlite(db.url) else None
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")          # outside any transaction
        try:
            with connection.begin():
                config = alembic_config(db.url)
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                if raw is not None:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left {len(broken)} broken references "
                                           f"(first: {broken[0]}); nothing was changed")
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")


def is_migrated(db):
    """True when the database has the master's tables (``master init`` ran)."""
    return inspect(db.read_engine).has_table("alembic_version")

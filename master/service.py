"""Setting the master up and serving it: ``master init`` and ``master serve``.

Owns the data directory (database, saved URL, admin token file), the first
admin, where the shipped software releases are found, and running uvicorn.
"""

import os
import resource
import sys
from pathlib import Path

from sqlalchemy import select

from . import db as dbmod
from . import settings, users
from slapnode.errors import SlapnodeError

from .core import Master
from .errors import ApiError
from .models import Setting, User

ADMIN_NAME = "admin"
ADMIN_TOKEN_FILE = "admin.token"


def releases_dir():
    """The shipped software-releases/: in the source tree, or installed under share/."""
    here = Path(__file__).resolve().parent.parent / "software-releases"
    if here.is_dir():
        return here
    installed = Path(sys.prefix) / "share" / "slapnode" / "software-releases"
    return installed if installed.is_dir() else None


def _write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(text + "\n")
    os.chmod(path, 0o600)


def default_names():
    """The names the master's certificate is for when none are given."""
    import socket

    return list(dict.fromkeys([socket.getfqdn(), socket.gethostname(), "localhost", "127.0.0.1",
                               "::1"]))


def tls_names(data_dir, host=None):
    """The certificate's names: those init saved (or the defaults), and the address the
    master listens on when it is a specific one."""
    saved = dbmod.read_settings(data_dir).get("names")
    names = [n.strip() for n in saved.split(",") if n.strip()] if saved else default_names()
    if host and host not in ("0.0.0.0", "::") and host not in names:
        names.append(host)
    return names


def init(data_dir, url=None, domain=None, currency=None, names=None, mail=None):
    """Create or upgrade the database; make sure an admin exists; remember the DNS
    zone of instance names (``domain``; the default, or what an earlier init saved)
    and the currency of prices and invoices (``currency``; EUR the first time, then
    kept; it cannot change once an invoice exists); ``mail``: the smarthost settings
    to save ({"smtp_relay": "HOST:PORT", ...}; see master/mail.py), kept otherwise.

    Returns (url, admin token). Running it again keeps everything: the
    migrations are idempotent and the saved admin token is reused.
    """
    if domain is not None:
        from slapnode.errors import UsageError

        from .names import check_zone

        try:
            domain = check_zone(domain)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if currency is not None and not settings.CURRENCY_RE.match(currency.strip().upper()):
        from slapnode.errors import UsageError

        raise UsageError(f"--currency {currency!r}: give an ISO 4217 code of three letters, e.g. EUR")
    data_dir = Path(data_dir)
    made = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    url = dbmod.resolve_url(data_dir, url)
    try:
        master = Master(url)
    except Exception:
        _forget(data_dir, made)
        raise
    try:
        dbmod.migrate(master.db)
        # only a database that works is remembered
        dbmod.save_settings(data_dir, db=url if url != dbmod.default_url(data_dir) else None,
                            domain=domain, names=",".join(names) if names else None,
                            **(mail or {}))
        token_file = data_dir / ADMIN_TOKEN_FILE

        def ensure_admin(session):
            admin = session.scalars(select(User).where(User.name == ADMIN_NAME)).first()
            if admin is None:
                _admin, token = users.create(session, ADMIN_NAME, is_admin=True)
                return token
            if token_file.exists():
                saved = token_file.read_text().strip()
                try:
                    users.authenticate_user(session, saved)
                    return saved
                except ApiError:
                    pass
            return users.add_token(session, admin)

        token = master.write(ensure_admin)

        def ensure_currency(session):
            if currency is not None or session.get(Setting, "currency") is None:
                settings.set_currency(session, currency or settings.DEFAULT_CURRENCY)
        try:
            master.write(ensure_currency)
        except ApiError as exc:
            raise SlapnodeError(exc.message) from None
        _write_secret(token_file, token)
        from . import tls

        fingerprint = tls.ensure(data_dir, tls_names(data_dir))
    except Exception:
        _forget(data_dir, made)
        raise
    finally:
        master.dispose()
    return url, token, fingerprint


def _forget(data_dir, made):
    """A failed first init leaves no trace: the data directory it made goes (if empty)."""
    if made:
        try:
            data_dir.rmdir()
        except OSError:
            pass


def _raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listening_socket(host, port):
    """The master's socket, bound before anything starts: a port in use is one
    line that says what to do, not a server's traceback."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SlapnodeError(f"{host}:{port} is already in use (another master?); stop it or "
                                "pick another address with --listen HOST:PORT") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise SlapnodeError(f"{host} is not an address of this machine; fix --listen") from None
        if exc.errno == errno.EACCES:
            raise SlapnodeError(f"port {port} needs privileges; pick a port above 1023 with "
                                "--listen") from None
        raise SlapnodeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(8192)
    sock.set_inheritable(True)
    return sock


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn, answering parked long-polls before it waits for connections to end."""

        def __init__(self, config, master):
            super().__init__(config)
            self.master = master

        async def shutdown(self, sockets=None):
            self.master.board.close()
            await super().shutdown(sockets)
    return Server


def serve(data_dir, url=None, host="127.0.0.1", port=8480, log_level="info", dns=None,
          dns_advertise=None, tls_files=None, insecure_http=False):
    """Serve the API; with ``dns`` ((host, port)) also the zone of instance names, which
    nodes reach at ``dns_advertise`` (default: the same address)."""
    import uvicorn

    from .names import DEFAULT_ZONE, Naming, check_zone

    Server = _server_class()

    from .app import create_app

    url = dbmod.resolve_url(data_dir, url)
    not_initialised = SlapnodeError(f"the database at {data_dir} is not initialised; "
                                    f"run `slapnode master init --data-dir {data_dir}` first")
    if dbmod.is_sqlite(url) and not Path(url.split(":///", 1)[-1]).exists():
        raise not_initialised
    saved = dbmod.read_settings(data_dir)
    zone = check_zone(saved.get("domain") or DEFAULT_ZONE)
    servers = []
    if dns:
        dns_host, dns_port = dns_advertise or dns
        if dns_host in ("0.0.0.0", "::"):
            raise SlapnodeError("--dns listens on every address: give the address nodes reach "
                                "it at with --dns-advertise HOST:PORT")
        servers = [f"{dns_host}#{dns_port}"]
    master = Master(url, releases_dir=releases_dir(), data_dir=data_dir,
                    naming=Naming(zone, servers, saved.get("mail_domain") or ""))
    if not dbmod.is_migrated(master.db):
        master.dispose()
        raise not_initialised
    dbmod.migrate(master.db)    # a newer slapnode may bring migrations
    sock = listening_socket(host, port)
    zone_server = None
    if dns:
        from .dns import ZoneServer

        zone_server = ZoneServer(master, data_dir, dns)
        zone_server.start()
    _raise_fd_limit()
    ssl = {}
    if not insecure_http:
        from . import tls

        if tls_files is None:           # the master's own CA, for the names it is reached at
            tls.ensure(data_dir, tls_names(data_dir, host))
            files = tls.paths(data_dir)
            tls_files = (files["cert"], files["key"])
        ssl = {"ssl_certfile": str(tls_files[0]), "ssl_keyfile": str(tls_files[1])}
    config = uvicorn.Config(create_app(master), host=host, port=port, log_level=log_level, **ssl,
                            backlog=8192, timeout_keep_alive=150, access_log=False,
                            server_header=False,
                            # parked long-polls must not hold a shutdown for their full wait
                            timeout_graceful_shutdown=2)
    try:
        Server(config, master).run(sockets=[sock])
    finally:
        if zone_server is not None:
            zone_server.stop()

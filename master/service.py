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
          dns_advertise=None, tls_files=None, insecure_http=False, workers=1, lost_after=None,
          advertise=None):
    """Serve the API; with ``dns`` ((host, port)) also the zone of instance names, which
    nodes reach at ``dns_advertise`` (default: the same address). ``workers`` > 1 (on
    PostgreSQL only): that many processes serve the one socket, told of each other's
    changes by LISTEN/NOTIFY (master/fanout.py); this process supervises them.
    ``lost_after``: seconds without a poll before a node is lost (master/liveness.py).
    ``advertise``: a name to announce the master under on the LAN (slapnode/discovery.py)."""
    from .names import DEFAULT_ZONE, Naming, check_zone

    site_cert = tls_files is not None         # the site's certificate: no CA of ours to pin
    url = dbmod.resolve_url(data_dir, url)
    if workers > 1 and dbmod.is_sqlite(url):
        raise SlapnodeError(f"--workers {workers} needs PostgreSQL (SQLite has a single writer): "
                            "serve one worker, or move to PostgreSQL with `master init --db`")
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
    naming = (zone, servers, saved.get("mail_domain") or "")
    master = Master(url, releases_dir=releases_dir(), data_dir=data_dir, naming=Naming(*naming))
    if not dbmod.is_migrated(master.db):
        master.dispose()
        raise not_initialised
    dbmod.migrate(master.db)    # a newer slapnode may bring migrations
    sock = listening_socket(host, port)
    _raise_fd_limit()
    ssl = {}
    if not insecure_http:
        from . import tls

        if tls_files is None:           # the master's own CA, for the names it is reached at
            tls.ensure(data_dir, tls_names(data_dir, host))
            files = tls.paths(data_dir)
            tls_files = (files["cert"], files["key"])
        ssl = {"ssl_certfile": str(tls_files[0]), "ssl_keyfile": str(tls_files[1])}
    worker = {"data_dir": str(data_dir), "url": url, "naming": naming, "host": host,
              "port": port, "log_level": log_level, "ssl": ssl, "lost_after": lost_after}
    if workers > 1:
        master.dispose()
        if not dns and not advertise:
            _become_supervisor(worker, sock, workers)       # (does not return)
        master = Master(url, data_dir=data_dir, naming=Naming(*naming))     # the zone's
    zone_server = announcer = None
    try:
        if advertise:
            announcer = _advertiser(advertise, host, port, data_dir, insecure_http, site_cert)
            announcer.start()
        if dns:
            from .dns import ZoneServer

            zone_server = ZoneServer(master, data_dir, dns)
            zone_server.start()
        if workers == 1:
            serve_worker(worker, sock, master=master)
        else:
            from . import supervise

            if master.fanout is not None:
                master.fanout.start()           # the zone follows what the workers commit
            supervise.run(worker, sock.fileno(), workers)
    finally:
        if announcer is not None:
            announcer.stop()
        if zone_server is not None:
            zone_server.stop()
        master.dispose()


def _advertiser(name, host, port, data_dir, insecure_http, site_cert):
    """The LAN announcement: this master's URL and (with its own CA) the CA's fingerprint."""
    import socket

    from slapnode.discovery import Advertiser
    from slapnode.pinning import fingerprint_of

    from . import tls

    address = host
    if host in ("0.0.0.0", "::"):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect(("192.0.2.1", 9))     # no packet is sent: it picks the way out
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
        finally:
            probe.close()
    where = f"[{address}]" if ":" in address else address
    url = f"{'http' if insecure_http else 'https'}://{where}:{port}"
    fingerprint = ""
    if not insecure_http and not site_cert:
        fingerprint = fingerprint_of(tls.paths(data_dir)["ca"].read_bytes())
    return Advertiser(name, url, fingerprint, address, port)


def serve_worker(worker, sock, index=0, master=None):
    """One process serving the socket (uvicorn); the first one keeps the house."""
    import uvicorn

    from .app import create_app
    from .names import Naming

    if master is None:
        master = Master(worker["url"], releases_dir=releases_dir(), data_dir=worker["data_dir"],
                        naming=Naming(*worker["naming"]))
    if worker["lost_after"]:
        master.liveness.lost_after = worker["lost_after"]
    config = uvicorn.Config(create_app(master, housekeeping=index == 0), host=worker["host"],
                            port=worker["port"], log_level=worker["log_level"], **worker["ssl"],
                            backlog=8192, timeout_keep_alive=150, access_log=False,
                            server_header=False,
                            # parked long-polls must not hold a shutdown for their full wait
                            timeout_graceful_shutdown=2)
    _server_class()(config, master).run(sockets=[sock])


def _become_supervisor(worker, sock, count):
    """Replace this process with the small supervisor (master/supervise.py): the
    workers do the serving, nothing of this interpreter's imports is kept."""
    import json

    from .supervise import ENV

    os.environ[ENV] = json.dumps({**worker, "fd": sock.fileno(), "count": count})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "slapnode.master.supervise"])

"""``slapnode master``: initialise and serve the master."""

import click

from ..errors import UsageError


def parse_address(text, option, example, default_host=None):
    """``HOST:PORT`` or ``[IPV6]:PORT`` given to ``option`` -> (host, port); a usage error
    naming the option and an example otherwise. Without ``default_host``, HOST is needed."""
    host, sep, port = (text or "").rpartition(":")
    host = host.strip("[]") or default_host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{option} {text!r}: expected HOST:PORT, e.g. {example}")
    return host, int(port)


def parse_listen(text):
    return parse_address(text, "--listen", "127.0.0.1:8480", default_host="127.0.0.1")


@click.group("master")
def group():
    """Run the master: the catalog, computers, instances and allocation."""


@group.command("init")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False),
              help="Where the master keeps its database and admin token.")
@click.option("--db", "db_url", metavar="URL",
              help="SQLAlchemy URL (default: SQLite in DATA_DIR), e.g. postgresql+psycopg://...")
@click.option("--domain", metavar="ZONE",
              help="DNS zone of instance names [slapnode.internal]; kept for later runs.")
@click.option("--currency", metavar="CODE",
              help="Currency of prices and invoices (ISO 4217) [EUR]; fixed once an invoice exists.")
@click.option("--name", "names", multiple=True, metavar="NAME",
              help="A DNS name or address the master is reached at, for its certificate "
                   "(repeatable) [this machine's names and loopback]; kept for later runs.")
@click.option("--smtp-relay", metavar="HOST:PORT",
              help="The smarthost mail from partitions leaves through, e.g. smtp.example.org:587 "
                   "('none' forgets it); kept for later runs.")
@click.option("--smtp-tls", type=click.Choice(["starttls", "tls", "none"]),
              help="How TLS is spoken with the smarthost [starttls].")
@click.option("--smtp-user", metavar="NAME", help="Sign in to the smarthost as NAME; the "
              "password comes from --smtp-password-file or SLAPNODE_SMTP_PASSWORD.")
@click.option("--smtp-password-file", type=click.Path(dir_okay=False, exists=True),
              metavar="PATH", help="A file whose first line is the smarthost password.")
@click.option("--smtp-ca-file", type=click.Path(dir_okay=False, exists=True), metavar="PATH",
              help="Trust this CA for the smarthost's certificate [the system's store].")
@click.option("--mail-domain", metavar="DOMAIN",
              help="Instances send from NAME@DOMAIN [the DNS zone]; kept for later runs.")
def init(data_dir, db_url, domain, currency, names, smtp_relay, smtp_tls, smtp_user,
         smtp_password_file, smtp_ca_file, mail_domain):
    """Create (or upgrade) the master's database; print the admin token last.

    Safe to run again: nothing is wiped, and the same admin token is printed.

    \b
    Example:
      slapnode master init --data-dir /var/lib/slapnode/master
      slapnode master init --data-dir ./m --db postgresql+psycopg://slap:pw@localhost/slapnode
      slapnode master init --data-dir ./m --domain grid.example.org --currency CHF
      SLAPNODE_SMTP_PASSWORD=... slapnode master init --data-dir ./m \\
          --smtp-relay smtp.example.org:587 --smtp-user grid
    """
    import os

    from ..master import mail as mailmod
    from ..master import service

    password = os.environ.get("SLAPNODE_SMTP_PASSWORD")
    if smtp_password_file:
        with open(smtp_password_file, encoding="utf-8", errors="replace") as stream:
            password = stream.readline().rstrip("\r\n")
    try:
        mail = mailmod.settings_from(smtp_relay, smtp_tls, smtp_user, password,
                                     smtp_ca_file and os.path.abspath(smtp_ca_file), mail_domain)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        url, token, fingerprint = service.init(data_dir, db_url, domain, currency, list(names),
                                               mail)
    except Exception as exc:
        raise _db_error(exc, db_url) from None
    where = "SQLite in " + data_dir if url.startswith("sqlite") else url.split("@")[-1]
    click.echo(f"master database ready ({where}); admin token saved in "
               f"{data_dir}/{service.ADMIN_TOKEN_FILE} (mode 0600)", err=True)
    click.echo(f"the master's CA (give it to nodes and users: --ca-fingerprint): {fingerprint}",
               err=True)
    from ..master import db as dbmod

    click.echo(mailmod.describe(dbmod.read_settings(data_dir)), err=True)
    click.echo(token)


def _db_error(exc, db_url):
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from ..errors import SlapnodeError

    if isinstance(exc, SlapnodeError):
        return exc
    if isinstance(exc, ArgumentError):
        return UsageError(f"--db {db_url!r} is not a valid database URL")
    if isinstance(exc, SQLAlchemyError):
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return SlapnodeError(f"cannot use the database: {first}; check --db and that the server runs")
    if isinstance(exc, (PermissionError, FileNotFoundError, NotADirectoryError)):
        return SlapnodeError(f"cannot use the data directory: {exc}")
    if isinstance(exc, ModuleNotFoundError):
        return SlapnodeError(f"the database driver is missing ({exc.name}); install it in slapnode's venv")
    return exc


@group.command("serve")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False),
              help="The directory given to `master init`.")
@click.option("--db", "db_url", metavar="URL", help="SQLAlchemy URL (default: what init used).")
@click.option("--listen", default="127.0.0.1:8480", show_default=True, metavar="HOST:PORT",
              help="Address to serve on.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--dns", metavar="HOST:PORT",
              help="Also serve the zone of instance names here (dnsmasq), for nodes and "
                   "for a site's delegation.")
@click.option("--dns-advertise", metavar="HOST:PORT",
              help="Where nodes reach that DNS server [the --dns address].")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), metavar="PATH",
              help="Serve with this certificate (chain) instead of the master's own CA's, e.g. "
                   "from the site's ACME client; with --tls-key.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), metavar="PATH",
              help="The key of --tls-cert.")
@click.option("--insecure-http", is_flag=True,
              help="Serve plain HTTP: tokens and parameters cross the network readable. Only "
                   "for a master on loopback or behind a TLS proxy.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes serving the API (more than 1 needs PostgreSQL); they wake each "
                   "other's long-polls through LISTEN/NOTIFY.")
@click.option("--advertise", metavar="NAME",
              help="Announce the master on the LAN as NAME (multicast DNS, with its URL and CA "
                   "fingerprint) for `node register --discover NAME`.")
@click.option("--lost-after", type=click.FloatRange(min=1), default=300, show_default=True,
              metavar="SECONDS", help="A node that has not polled for this long is lost: its "
              "instances show unreachable and may be moved (`instance request --move`).")
def serve(data_dir, db_url, listen, log_level, dns, dns_advertise, tls_cert, tls_key,
          insecure_http, workers, advertise, lost_after):
    """Serve the JSON API under /api/v1, My Space at / and the shipped releases under
    /software-releases/, over HTTPS (the master's own CA from `master init`, or yours).

    \b
    Example:
      slapnode master serve --data-dir /var/lib/slapnode/master --listen 0.0.0.0:8480
      slapnode master serve --data-dir /var/lib/slapnode/master --dns 192.0.2.10:53
      slapnode master serve --data-dir /var/lib/slapnode/master --workers 4   # PostgreSQL
    """
    from ..master import service

    host, port = parse_listen(listen)
    dns = dns and parse_address(dns, "--dns", "192.0.2.10:53")
    dns_advertise = dns_advertise and parse_address(dns_advertise, "--dns-advertise",
                                                    "192.0.2.10:53")
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("give --tls-cert and --tls-key together (a certificate and its key)")
    if insecure_http and tls_cert:
        raise UsageError("--insecure-http and --tls-cert contradict each other; pick one")
    try:
        service.serve(data_dir, db_url, host, port, log_level, dns, dns_advertise,
                      (tls_cert, tls_key) if tls_cert else None, insecure_http, workers,
                      lost_after, advertise)
    except Exception as exc:
        raise _db_error(exc, db_url) from None


@group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The directory given to `master init`.")
@click.option("--db", "db_url", metavar="URL", help="SQLAlchemy URL (default: what init used).")
def backup(file, data_dir, db_url):
    """Write a backup of the master to FILE, while it serves: the database (SQLite's online
    backup, or pg_dump), the settings, the admin token and the CA (mode 0600: it holds the
    CA's key).

    \b
    Example:
      slapnode master backup /var/backups/slapnode-$(date +%F).tar.gz --data-dir /var/lib/slapnode/master
    """
    from ..master import backup as backup_mod

    try:
        manifest = backup_mod.backup(data_dir, file, db_url)
    except Exception as exc:
        raise _db_error(exc, db_url) from None
    click.echo(f"backup of the master ({manifest['database']}, {len(manifest['files'])} files "
               f"beside it) written to {file}")


@group.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False),
              help="Where the restored master lives (a new directory, or --force).")
@click.option("--db", "db_url", metavar="URL",
              help="Restore into this database (PostgreSQL backups) [the one the backup names].")
@click.option("--force", is_flag=True, help="Replace a master that is already there.")
def restore(file, data_dir, db_url, force):
    """Restore a backup made by `master backup`: then `master serve --data-dir` serves the
    same catalog, instances, tokens and invoices under the same CA, and nodes go on.

    \b
    Example:
      slapnode master restore slapnode-2026-11-26.tar.gz --data-dir /var/lib/slapnode/master
      slapnode master restore b.tar.gz --data-dir ./m --db postgresql+psycopg://slap:pw@db2/slapnode
    """
    from ..master import backup as backup_mod

    try:
        manifest = backup_mod.restore(file, data_dir, db_url, force)
    except Exception as exc:
        raise _db_error(exc, db_url) from None
    click.echo(f"restored the master of {manifest['created']} ({manifest['database']}) into "
               f"{data_dir}; start it with `slapnode master serve --data-dir {data_dir}`")

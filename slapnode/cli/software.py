"""``slapnode software``: the catalog of software releases and their supply to nodes."""

import json

import click

from ..errors import UsageError
from .context import json_option, pass_context, print_json, print_table, printable


@click.group("software")
def group():
    """The software release catalog, and which nodes should have which release."""


def _read_schema(path):
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            schema = json.load(stream)
    except OSError as exc:
        raise UsageError(f"--schema {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"--schema {path}: not valid JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise UsageError(f"--schema {path}: a JSON Schema must be a JSON object")
    return schema


@group.command("add")
@click.argument("url")
@click.option("--title", required=True, help="Short name users can request it by.")
@click.option("--version", "version", default="", metavar="VERSION",
              help="This URL is VERSION of the title (a title may have several; requests get "
                   "the newest unless they say --version).")
@click.option("--price", default="0", show_default=True, metavar="AMOUNT",
              help="Price per month, in the master's currency.")
@click.option("--price-cpu-hour", default="0", show_default=True, metavar="AMOUNT",
              help="Metered: price per CPU-hour an instance uses.")
@click.option("--price-disk-gb-month", default="0", show_default=True, metavar="AMOUNT",
              help="Metered: price per GB-month of disk an instance holds.")
@click.option("--description", default="", help="One paragraph for the catalog.")
@click.option("--schema", "schema_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="JSON Schema that requests' parameters must satisfy (default: the one "
                   "software.cfg.json beside the profile names, as SlapOS has it).")
@click.option("--no-schema", is_flag=True, help="Do not look for software.cfg.json.")
@json_option
@pass_context
def add(ctx, url, title, version, price, price_cpu_hour, price_disk_gb_month, description,
        schema_path, no_schema, as_json):
    """Add the release at URL to the catalog (admins only).

    Without --schema, the parameter schema and description come from software.cfg.json
    beside the profile (URL + ".json"), when there is one.

    \b
    Example:
      slapnode software add http://master:8480/software-releases/hello/software.cfg \\
          --title hello --price 0.50 --schema software-releases/hello/software.cfg.json
      slapnode software add https://example.org/boinc/software.cfg --title boinc \\
          --version 2.1 --price 1 --price-cpu-hour 0.01 --price-disk-gb-month 0.05
    """
    schema = _read_schema(schema_path)
    if schema is None and not no_schema and ctx.client.me()["admin"]:
        # (only for an admin: anyone else is refused by the master, with nothing fetched)
        from .. import release_meta

        try:
            schema, found, where = release_meta.read(url)
        except release_meta.MetaError as exc:
            raise UsageError(f"{exc}; give --schema FILE or --no-schema") from None
        if where:
            click.echo(f"schema{' and description' if found else ''} from {where}", err=True)
        description = description or found or ""
    result = ctx.client.add_software(url, title, price, description, schema, price_cpu_hour,
                                     price_disk_gb_month, version)
    if as_json:
        print_json(result)
    else:
        click.echo(f"added {result['title']} ({result['url']}), {result['price_per_month']} "
                   f"{result['currency']}/month")


@group.command("list")
@json_option
@pass_context
def list_(ctx, as_json):
    """List the catalog.

    \b
    Example:
      slapnode software list --json
    """
    rows = ctx.client.list_software()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, [("TITLE", "title"), ("VERSION", "version"), ("PER MONTH", "price_per_month"),
                           ("PER CPU-HOUR", "price_per_cpu_hour"), ("CURRENCY", "currency"),
                           ("URL", "url"), ("DESCRIPTION", "description")])


@group.command("show")
@click.argument("software")
@json_option
@pass_context
def show(ctx, software, as_json):
    """Show one release (by URL or title) and where it is supplied.

    \b
    Example:
      slapnode software show hello
    """
    result = ctx.client.show_software(software)
    if as_json:
        print_json(result)
        return
    for key in ("title", "version", "url", "description", "price_per_month", "price_per_cpu_hour",
                "price_per_disk_gb_month", "currency"):
        click.echo(f"{key:16} {printable(result[key])}")
    if len(result.get("versions") or []) > 1:
        click.echo(f"{'versions':16} {printable(', '.join(result['versions']))}")
    click.echo(f"{'schema':16} {'yes' if result['has_schema'] else 'no'}")
    click.echo("supplied to:")
    print_table(result["supplies"], [("NODE", "node"), ("REQUESTED", "requested"),
                                     ("STATUS", "status")])


@group.command("supply")
@click.argument("software")
@click.option("--node", required=True, metavar="NAME", help="The computer to build it on.")
@json_option
@pass_context
def supply(ctx, software, node, as_json):
    """Have SOFTWARE (URL or title) built on a node, before any instance needs it.

    \b
    Example:
      slapnode software supply hello --node volunteer-1
    """
    result = ctx.client.supply(software, node)
    if as_json:
        print_json(result)
    else:
        click.echo(f"{result['software']} supplied to {result['node']} ({result['status']})")


@group.command("remove")
@click.argument("software")
@click.option("--node", required=True, metavar="NAME", help="The computer to remove it from.")
@json_option
@pass_context
def remove(ctx, software, node, as_json):
    """Remove SOFTWARE from a node once no partition uses it.

    \b
    Example:
      slapnode software remove hello --node volunteer-1
    """
    result = ctx.client.supply(software, node, state="destroyed")
    if as_json:
        print_json(result)
    else:
        click.echo(f"{result['software']} will be removed from {result['node']}")


@group.command("build")
@click.argument("profile")
@click.option("--software-root", type=click.Path(file_okay=False), default="./software",
              show_default=True, help="Where to build (one directory per release URL).")
@click.option("--user", "as_user", metavar="NAME",
              help="Build as this unprivileged user (needed when you are root).")
@click.option("--offline", is_flag=True, help="Use only the download cache.")
def build(profile, software_root, as_user, offline):
    """Build the software release PROFILE (a path or URL) locally, for release authors.

    Prints each part as it is installed; the full log is in DIR/.build.log.
    Running it again with nothing changed does nothing.

    \b
    Example:
      slapnode software build software-releases/hello/software.cfg --software-root /tmp/sw
    """
    import os
    import time

    from ..errors import SlapnodeError
    from ..software import engine, software_dir

    url = profile if "://" in profile else os.path.abspath(profile)
    software_root = os.path.abspath(software_root)
    directory = software_dir(software_root, url)
    cache = os.path.join(software_root, engine.DOWNLOAD_CACHE)
    started = time.monotonic()
    if as_user:
        # Root expands nothing of a release: the user builds, and expands it first.
        from ..software.supply import SoftwareUser

        if not _user_exists(as_user):
            raise UsageError(f"--user {as_user!r}: no such user")
        user = SoftwareUser(as_user)
        user.make_dirs(software_root, engine.DOWNLOAD_CACHE, directory.name)
        digest = user.digests(software_root, cache, [url]).get(url)
        if isinstance(digest, SlapnodeError):
            raise digest
    elif os.geteuid() == 0:
        raise UsageError("building as root is refused; run as an unprivileged user or "
                         "pass --user NAME (e.g. --user slapsoft)")
    else:
        digest = engine.load_profile(url, directory, cache).digest()   # refuses a bad profile
    if engine.completed_digest(directory) == digest:
        click.echo(f"up to date: {directory} in {time.monotonic() - started:.2f} s "
                   f"(profile {digest[:12]})")
        return
    if as_user:
        result = user.run("build", url, directory, cache, *(["--offline"] if offline else []))
        if result.returncode != 0:
            raise SlapnodeError(result.last_error_line("build failed")
                                + f" (log: {directory}/{engine.LOG})")
        answer = result.stdout.decode()
        digest, built = answer.split()[-1], "up to date" not in answer
    else:
        log = _Tee(directory)
        try:
            digest, built = engine.build(url, directory, cache, log=log, offline=offline)
        finally:
            log.close()
    took = time.monotonic() - started
    click.echo(f"{'built' if built else 'up to date:'} {directory} in {took:.2f} s "
               f"(profile {digest[:12]})")


def _user_exists(name):
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class _Tee:
    """The build log, also shown on stderr as it goes."""

    def __init__(self, directory):
        import os

        os.makedirs(directory, exist_ok=True)
        self.file = open(os.path.join(directory, ".build.log"), "a", encoding="utf-8")

    def write(self, text):
        self.file.write(text)
        click.echo(text, nl=False, err=True)

    def flush(self):
        self.file.flush()

    def fileno(self):
        return self.file.fileno()

    def close(self):
        self.file.close()

"""Instance-side recipes: ``service``, ``promise``, ``publish`` and ``password``.

They run while a partition is deployed (as the partition user, inside the
partition) and write small declarations the node agent reads:

* ``etc/supervisor.d/<part>.conf``: a supervisor program (``service``);
* ``etc/promise/<part>.json``: a health check (``promise``);
* ``etc/publish/<part>.json``: connection parameters (``publish``);
* ``etc/.passwords/<part>``: a password made once and kept (``password``);
* ``etc/forward/<part>.json``: a TCP port to publish on the node's IPv4 (``forward``);
* ``etc/mail/<part>.json`` and ``bin/sendmail``: the instance sends mail (``sendmail``);
* a supervisor program relaying between IPv4 and IPv6 (``redirect``).
"""

import json
import os
import secrets
from pathlib import Path

from ..proc import CLEAN_PATH
from . import Recipe, RecipeError, as_bool

RESERVED = {"recipe", "location", "shared-instance", "serialise", "_buildout_section_name_"}


def _write(path, text, mode=0o644):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
    os.replace(tmp, path)
    return str(path)


def _quote(value):
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


class Service(Recipe):
    """A long-running process: ``command``; ``environment`` (KEY=VALUE lines);
    ``directory`` (default the partition); ``stop-signal`` (default TERM);
    ``stop-wait`` seconds (default 10); ``stop-as-group`` (default true: the stop
    signal goes to the command's whole process group; false for a program that
    stops its own children in order, such as condor_master; what is left after
    ``stop-wait`` is killed as a group either way)."""

    def install(self):
        command = self.require("command").replace("\n", " ")
        root = self.context.directory
        environment = []
        for line in (self.options.get("environment") or "").splitlines():
            if line.strip():
                key, sep, value = line.strip().partition("=")
                if not sep:
                    raise RecipeError(f"[{self.name}] environment line {line.strip()!r}: expected KEY=VALUE")
                environment.append(f"{key.strip()}={_quote(value.strip())}")
        environment.append(f"HOME={_quote(str(root))}")
        if not any(item.startswith("PATH=") for item in environment):
            # the partition's own programs first (bin/sendmail, see Sendmail)
            environment.append(f"PATH={_quote(str(root / 'bin') + ':' + CLEAN_PATH)}")
        lines = [
            f"[program:{self.name}]",
            f"command = {command.replace('%', '%%')}",
            f"directory = {self.options.get('directory') or root}",
            f"environment = {','.join(environment)}",
            f"stopsignal = {self.options.get('stop-signal', 'TERM').upper().removeprefix('SIG')}",
            f"stopwaitsecs = {int(self.options.get('stop-wait', '10'))}",
            "autostart = true",
            "autorestart = true",
            "startsecs = 1",
            "startretries = 5",
            f"stopasgroup = {'true' if as_bool(self.options.get('stop-as-group'), True) else 'false'}",
            "killasgroup = true",
            "redirect_stderr = true",
            f"stdout_logfile = {root}/var/log/{self.name}.log",
            "stdout_logfile_maxbytes = 5MB",
            "stdout_logfile_backups = 2",
        ]
        return [_write(root / "etc" / "supervisor.d" / f"{self.name}.conf", "\n".join(lines) + "\n")]

    update = install


def _endpoint(text, what):
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> (host, port, is_ipv6)."""
    import ipaddress

    host, sep, port = text.strip().rpartition(":")
    try:
        number = int(port)
        if not sep or not 0 < number < 65536:
            raise ValueError
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise RecipeError(f"{what} {text.strip()!r}: expected IPV4:PORT or [IPV6]:PORT") from None
    return str(address), number, address.version == 6


class Redirect(Service):
    """Relay a TCP service to another address of the partition, across IPv4 and IPv6:
    ``source = [IPV6]:PORT`` (where to listen), ``target = IPV4:PORT`` (where the
    service listens), or the other way round. Runs Debian's socat under the
    partition's supervisord."""

    def install(self):
        host, port, six = _endpoint(self.require("source"), "source")
        thost, tport, tsix = _endpoint(self.require("target"), "target")
        listen = f"TCP6-LISTEN:{port},bind=[{host}],ipv6only=1" if six else \
            f"TCP4-LISTEN:{port},bind={host}"
        connect = f"TCP6:[{thost}]:{tport}" if tsix else f"TCP4:{thost}:{tport}"
        self.options = {**self.options,
                        # 256 KiB blocks: socat's 8 KiB default costs a third of the
                        # throughput in system calls (bench/network_bench.py)
                        "command": f"/usr/bin/socat -b 262144 {listen},reuseaddr,fork "
                                   f"{connect}"}
        return super().install()

    update = install


class Forward(Recipe):
    """Publish the partition's TCP ``port`` on the node's own IPv4 address, for users
    on IPv4-only networks: the node picks a port of ``[network] forward_ports`` and
    the instance publishes ``NODE-IP:PORT`` under this part's name."""

    def install(self):
        try:
            port = int(self.require("port"))
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise RecipeError(f"[{self.name}] port {self.options.get('port')!r} is not a TCP port") from None
        return [_write(self.context.directory / "etc" / "forward" / f"{self.name}.json",
                       json.dumps({"port": port}))]

    update = install


class Sendmail(Recipe):
    """Declare that the instance sends mail, and give it ``bin/sendmail`` (first on its
    services' PATH): the node's relay then takes its messages, sent from the instance's
    own address (``${slap-configuration:mail-from}``). ``relay = HOST:PORT`` (usually
    ``${slap-configuration:mail-relay}``; default: the partition's gateway, port 25).
    Sets ``path``, the program, for other parts to use."""

    computed = {"path": lambda get: f"{_partition_root(get)}/bin/sendmail"}

    def install(self):
        import shlex
        import sys

        root = self.context.directory
        relay = (self.options.get("relay") or "").strip()
        if relay:
            host, sep, port = relay.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise RecipeError(f"[{self.name}] relay {relay!r}: expected HOST:PORT, "
                                  "e.g. ${slap-configuration:mail-relay}")
        program = root / "bin" / "sendmail"
        env = f"SLAPNODE_SMTP_RELAY={shlex.quote(relay)} " if relay else ""
        script = ("#!/bin/sh\n# the node's mail relay takes it from here (slapnode:sendmail)\n"
                  f"{env}exec {shlex.quote(sys.executable)} -I -m slapnode.mail.sendmail \"$@\"\n")
        return [_write(root / "etc" / "mail" / f"{self.name}.json", json.dumps({"sends": True})),
                _write(program, script, 0o755)]

    update = install


class Promise(Recipe):
    """A health check: ``tcp = HOST:PORT``, ``http = URL`` or ``command = ...``;
    ``interval`` (s, default 60) and ``timeout`` (s, default 5)."""

    def install(self):
        kinds = [k for k in ("tcp", "http", "command") if self.options.get(k, "").strip()]
        if len(kinds) != 1:
            raise RecipeError(f"[{self.name}] give exactly one of tcp, http or command")
        kind = kinds[0]
        spec = {"name": self.name, "type": kind, "target": self.options[kind].strip(),
                "interval": float(self.options.get("interval", "60")),
                "timeout": float(self.options.get("timeout", "5"))}
        return [_write(self.context.directory / "etc" / "promise" / f"{self.name}.json",
                       json.dumps(spec))]

    update = install


class Publish(Recipe):
    """Connection parameters: every option but ``recipe``; ``serialise = json``
    publishes them as one JSON-in-XML ``_`` parameter; ``shared-instance = ID``
    publishes them for that shared instance instead of this one.

    ``for-each-shared-instance = true`` (on a host instance) publishes the
    options once per shared instance attached to it, each value formatted with
    that shared instance: ``{id}``, ``{title}``, ``{parameters[path]}``.
    """

    def _values(self, shared=None):
        values = {k: v for k, v in self.options.items()
                  if k not in RESERVED and not k.startswith("_") and k != "for-each-shared-instance"}
        if shared is not None:
            try:
                values = {k: v.format(**shared) for k, v in values.items()}
            except (KeyError, IndexError, ValueError) as exc:
                raise RecipeError(f"[{self.name}] cannot fill in for shared instance "
                                  f"{shared.get('title')!r}: missing {exc}") from None
        if self.options.get("serialise", "").strip() == "json":
            values = {"_": json.dumps(values, sort_keys=True)}
        return values

    def install(self):
        folder = self.context.directory / "etc" / "publish"
        written = []
        if self.options.get("for-each-shared-instance", "").strip().lower() in ("true", "yes", "1"):
            for old in folder.glob(f"{self.name}.shared-*.json"):
                old.unlink()
            for shared in self.context.shared_instances():
                record = {"shared_instance": shared["id"], "values": self._values(shared)}
                written.append(_write(folder / f"{self.name}.shared-{shared['id']}.json",
                                      json.dumps(record, sort_keys=True)))
            return written
        shared = self.options.get("shared-instance", "").strip()
        record = {"shared_instance": int(shared) if shared else None, "values": self._values()}
        return [_write(folder / f"{self.name}.json", json.dumps(record, sort_keys=True))]

    update = install


def _password(get):
    path = Path(get("storage-path"))
    if not path.exists():
        length = int(get("bytes")) if _has(get, "bytes") else 16
        _write(path, secrets.token_urlsafe(length), 0o600)
    return path.read_text().strip()


def _has(get, name):
    from ..profile.parser import ProfileError

    try:
        get(name)
        return True
    except ProfileError:
        return False


class Password(Recipe):
    """A password generated once (``bytes`` of randomness, default 16) and kept in
    ``storage-path`` (default ``etc/.passwords/<part>``, 0600) across redeploys.
    Read it as ``${<part>:passwd}``."""

    computed = {
        "storage-path": lambda get: f"{get('_partition-root')}/etc/.passwords/{get('_buildout_section_name_')}",
        "_partition-root": lambda get: _partition_root(get),
        "passwd": _password,
    }
    effectful = frozenset({"passwd"})

    def install(self):
        path = Path(self.options.get("storage-path") or
                    self.context.directory / "etc" / ".passwords" / self.name)
        if not path.exists():
            _write(path, secrets.token_urlsafe(16), 0o600)
        return []       # never listed: a reinstall must not throw the password away

    update = install


def _partition_root(get):
    # ${buildout:directory} of an instance profile is the partition root;
    # location is <root>/parts/<name>.
    location = Path(get("location"))
    return str(location.parent.parent)

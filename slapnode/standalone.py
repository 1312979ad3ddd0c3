"""Standalone: a master and this machine as its only node, in one command.

Owns the one-machine set-up: the master's data directory and process, the
shipped releases in the catalog (with their schemas), a user for whoever runs
it, this machine registered and formatted as a node, the shipped releases
supplied to it, a client config so that `slapnode instance request …` works
from another shell, and the node daemon in the foreground. Everything lives
under one data directory; running it again picks up where it was.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from . import client as client_mod
from . import nodeconfig
from .errors import MasterError, SlapnodeError

USER = "standalone"
NODE = "standalone"


def shipped_releases():
    from .master.service import releases_dir

    root = releases_dir()
    if root is None:
        return []
    return sorted(p.parent for p in Path(root).glob("*/software.cfg"))


def _dies_with(parent):
    """For a child's preexec_fn: SIGTERM when ``parent`` (this thread) dies (PR_SET_PDEATHSIG)."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def child():
        prctl(1, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:      # already gone before the request was made
            os._exit(1)
    return child


def start_master(data_dir, listen, say):
    from .master import service

    master_dir = Path(data_dir) / "master"
    _, admin_token, _fingerprint = service.init(master_dir)
    log = open(Path(data_dir) / "master.log", "ab")
    # Its own session: a Ctrl-C on the terminal reaches standalone only, which stops the
    # master last (the agent still reports while it stops); it dies with standalone anyway.
    process = subprocess.Popen([sys.executable, "-m", "slapnode", "master", "serve", "--data-dir",
                                str(master_dir), "--listen", listen, "--log-level", "warning",
                                "--insecure-http"],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True, preexec_fn=_dies_with(os.getpid()))
    log.close()
    url = f"http://{listen}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/api/v1/health", timeout=1)
            break
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SlapnodeError(f"the master did not start; see {data_dir}/master.log "
                                    f"(is {listen} free? use --listen)")
            time.sleep(0.05)
    say(f"master running at {url} (pid {process.pid}); plain HTTP, as standalone is this "
        "machine's own: a master nodes reach over a network serves HTTPS (docs/tls.md)")
    return process, url, admin_token


def _token(path, make):
    path = Path(path)
    if path.exists():
        return path.read_text().strip()
    token = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(token + "\n")
    return token


def catalog(admin, url):
    """Add the shipped releases (idempotent). Returns their URLs."""
    urls = []
    existing = {s["url"] for s in admin.list_software()}
    for release in shipped_releases():
        software_url = f"{url}/software-releases/{release.name}/software.cfg"
        urls.append(software_url)
        if software_url in existing:
            continue
        schema_path = release / "software.cfg.json"
        schema = json.loads(schema_path.read_text()) if schema_path.exists() else None
        readme = release / "README.md"
        description = readme.read_text().split("\n\n")[1].strip() if readme.exists() else ""
        admin.add_software(software_url, release.name, "0", description[:500], schema)
    return urls


def node_config(data_dir, admin, url, partitions, isolation, names=None):
    from .node import register

    path = Path(data_dir) / "node.cfg"
    data_dir = Path(data_dir)
    if path.exists():
        config = nodeconfig.load(path)
        config.master = url
        changed = False
        if partitions is not None and config.partitions != partitions:
            config.partitions, changed = partitions, True
        if isolation is not None and config.isolation != isolation:
            config.isolation, changed = isolation, True
        if changed or config.master != url:
            nodeconfig.save(config, path)
        return config, path, []
    names = {k: v for k, v in (names or {}).items() if v}
    options = {"partitions": partitions if partitions is not None else 4,
               "instance_root": str(data_dir / "srv"), "software_root": str(data_dir / "software"),
               "isolation": isolation, "user_prefix": names.get("user_prefix"),
               "bridge": names.get("bridge"), "ipv4_range": names.get("ipv4_range")}
    base = nodeconfig.NodeConfig(state_dir=str(data_dir / "state"))
    if names.get("user_prefix"):            # a node beside others: its own software user too
        base.software_user = f"{names['user_prefix']}soft"
    config, notes = register.build_config(base, url, options)
    token = admin.create_enrollment_token(NODE, scope="public")["token"]
    answer = client_mod.Client(url).enroll(token)
    config.name, config.credential = answer["computer"], answer["credential"]
    nodeconfig.save(config, path)
    return config, path, notes


def prepare(data_dir, listen, partitions, isolation, say, names=None):
    """Everything up to the daemon. Returns (master process, node config, node client)."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o755)           # partition users reach their directory through it
    process, url, admin_token = start_master(data_dir, listen, say)
    try:
        admin = client_mod.Client(url, admin_token)
        releases = catalog(admin, url)
        user_token = _token(data_dir / "user.token", lambda: admin.add_user(USER)["token"])
        config, path, notes = node_config(data_dir, admin, url, partitions, isolation, names)
        for note in notes:
            say(note)
        from . import format as fmt

        node = client_mod.Client(url, config.credential)
        outcome = fmt.reconcile(config, node, progress=say)
        if outcome.report_error:
            raise SlapnodeError(f"the master did not take the partitions: {outcome.report_error}")
        say(f"node {config.name}: {len(outcome.partitions)} partitions, isolation {config.isolation}"
            + ("" if config.isolation == "lxc" else " (reduced: no containers)"))
        for release in releases:
            admin.supply(release, config.name)
        client_path = client_mod.write_client_config(url, user_token)
        say(f"client config written to {client_path}; in another shell:")
        say(f"  export SLAPNODE_MASTER={url}")
        say(f"  export SLAPNODE_TOKEN={user_token}")
        say("  slapnode instance request my-hello hello --parameter name=Ada --wait 60")
        say(f"or in a browser: {url}/ (My Space; sign in with that token)")
        return process, config, node
    except (SlapnodeError, MasterError):
        process.terminate()
        process.wait(10)
        raise


def stop_instances(config, say):
    """Leave no process behind: stop every partition's supervisord (files stay)."""
    from .deploy import isolation as isolation_mod
    from .deploy.partition import parts_of

    from .deploy import cgroups

    cgroups.Parent(config).freeze(False)        # frozen processes cannot stop (paused stays)
    isolation = isolation_mod.isolation_for(config)
    for part in parts_of(config).values():
        isolation.stop(part)
    say("instances stopped; they start again with the next `slapnode standalone`")

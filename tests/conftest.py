"""Shared fixtures: a real master process on loopback (SQLite and PostgreSQL),
the CLI run in-process, and names unique to this test run."""

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from slapnode.cli import main as cli_main
from slapnode.deploy import zygote
from slapnode.client import Client

RUN_ID = uuid.uuid4().hex[:8]
PG_URL = os.environ.get("SLAPNODE_TEST_PG_URL")
REQUIRE_PG = os.environ.get("SLAPNODE_REQUIRE_PG") == "1"
REQUIRE_LXC = os.environ.get("SLAPNODE_REQUIRE_LXC") == "1"


def require_lxc():
    """LXC is the default isolation: a test that needs it fails when SLAPNODE_REQUIRE_LXC=1
    and LXC is missing (CI installs it), and is skipped, saying so, elsewhere."""
    if shutil.which("lxc-execute"):
        return
    if REQUIRE_LXC:
        pytest.fail("lxc-execute is missing but SLAPNODE_REQUIRE_LXC=1 (apt-get install lxc)")
    pytest.skip("LXC is not installed (lxc-execute missing; apt-get install lxc)")


def published(view):
    """An instance's connection parameters as its instance published them (the master
    adds the instance's DNS name as ``hostname``)."""
    return {k: v for k, v in (view.get("connection") or {}).items() if k != "hostname"}


_GIVEN = set()


def unique_name(prefix="t"):
    """A name no other in this run has: random (names are cut short in DNS labels, so
    their first characters must differ too) and never given twice (a thousand random
    24-bit names collide once in about thirty runs)."""
    while True:
        name = f"{prefix}-{secrets.token_hex(3)}-{RUN_ID}"    # random first: a label
        # of 16 keeps all of it ("user-" then the run's id kept 2 random characters,
        # and two users' instances "i" on the shared test master were both "i.user-…")
        if name not in _GIVEN:
            _GIVEN.add(name)
            return name


@pytest.fixture
def unique():
    return unique_name


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def last_line(self):
        return self.stdout.strip().splitlines()[-1]


def run_cli(args, master=None, token=None, input=None, env=None):
    """Run ``slapnode ARGS`` in-process, through the real entry point."""
    runner = CliRunner()
    full_env = {"SLAPNODE_MASTER": master, "SLAPNODE_TOKEN": token,
                "SLAPNODE_CLIENT_CONFIG": "/nonexistent/slapnode-test-client.cfg"}
    full_env.update(env or {})
    with runner.isolation(input=input, env=full_env) as outstreams:
        try:
            cli_main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        stdout = outstreams[0].getvalue().decode()
        stderr = outstreams[1].getvalue().decode()
    return CliResult(code, stdout, stderr)


@dataclass
class MasterHandle:
    url: str
    admin_token: str
    data_dir: Path
    db_url: str
    backend: str
    process: subprocess.Popen

    def client(self, token=None):
        return Client(self.url, token if token is not None else self.admin_token, retries=0)

    def cli(self, *args, token=None, input=None, env=None):
        return run_cli(args, self.url, token if token is not None else self.admin_token,
                       input=input, env=env)

    def new_user(self, admin=False):
        result = self.client().add_user(unique_name("user"), admin)
        return result["name"], result["token"]


def slapnode_cmd(*args):
    return [sys.executable, "-m", "slapnode", *args]


def start_master(data_dir, db_url=None, port=None, log_level="warning", tls=False, names=(),
                 serve_args=(), new_session=False):
    """``master init`` then ``master serve`` (on ``port``, or a free one) as processes:
    plain HTTP on loopback (``--insecure-http``), or with ``tls`` HTTPS with the master's
    own CA for ``names`` (then the CA's fingerprint is returned too). ``serve_args``: more
    for `master serve`; ``new_session``: in a process group of its own (stop_group)."""
    init = subprocess.run(slapnode_cmd("master", "init", "--data-dir", str(data_dir),
                                       *(["--db", db_url] if db_url else []),
                                       *(arg for name in names for arg in ("--name", name))),
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    port = port or free_port()
    log = open(Path(data_dir) / "serve.log", "a")
    proc = subprocess.Popen(slapnode_cmd("master", "serve", "--data-dir", str(data_dir),
                                         "--listen", f"127.0.0.1:{port}", "--log-level", log_level,
                                         *(() if tls else ("--insecure-http",)), *serve_args),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=new_session)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/api/v1/health", timeout=1,
                         verify=str(Path(data_dir) / "tls" / "ca.pem") if tls else True)
            break
        except (requests.ConnectionError, requests.Timeout):   # (workers still starting)
            if proc.poll() is not None or time.monotonic() > deadline:
                if new_session:
                    stop_group(proc, 5)         # (its workers too)
                else:
                    proc.kill()
                raise RuntimeError("master did not start: " + (Path(data_dir) / "serve.log").read_text())
            time.sleep(0.05)
    token = init.stdout.strip().splitlines()[-1]
    if tls:
        return proc, url, token, init.stderr.split("--ca-fingerprint): ")[1].split()[0]
    return proc, url, token


def stop_group(proc, seconds=15):
    """Stop a process started with start_new_session and its group: SIGTERM, then, if it
    is still there after ``seconds``, SIGKILL. Never raises (it runs in finalizers)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(seconds)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def stop_process(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _pg_admin(sql):
    from sqlalchemy import create_engine, text
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def require_pg():
    """PostgreSQL is there, or the test fails (SLAPNODE_REQUIRE_PG=1) or is skipped."""
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("SLAPNODE_TEST_PG_URL is not set but SLAPNODE_REQUIRE_PG=1")
        pytest.skip("no PostgreSQL (set SLAPNODE_TEST_PG_URL; `bash install.sh test` does)")


@contextlib.contextmanager
def fresh_pg_database(prefix):
    """The URL of a PostgreSQL database made for the caller, dropped after it."""
    name = f"{prefix}_{RUN_ID}_{secrets.token_hex(3)}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sh(*cmd, ns=None, check=True, **kwargs):
    """``cmd`` (in network namespace ``ns``), its output captured as text."""
    argv = (["ip", "netns", "exec", ns] if ns else []) + [str(c) for c in cmd]
    return subprocess.run(argv, capture_output=True, text=True, check=check, **kwargs)


@pytest.fixture(scope="session")
def pg_database():
    """A PostgreSQL database made for this test run, dropped at the end."""
    require_pg()
    with fresh_pg_database("slapnode_test") as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def master(request):
    """A real master process on loopback, one per backend, for the whole run."""
    # (the database first: without PostgreSQL this skips, and must leave no directory)
    db_url = request.getfixturevalue("pg_database") if request.param == "postgresql" else None
    data_dir = Path(tempfile.mkdtemp(prefix=f"slapnode-master-{RUN_ID}-"))
    proc = None
    try:
        proc, url, token = start_master(data_dir, db_url)
        yield MasterHandle(url, token, data_dir, db_url or f"sqlite:///{data_dir}/master.db",
                           request.param, proc)
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class EnrolledNode:
    """A computer enrolled on the master, talking to it with its node credential."""

    name: str
    client: Client

    def report_partitions(self, count, start=0):
        parts = [{"reference": f"slappart{i}", "unix_user": f"u{i}",
                  "ipv4": f"10.9.0.{i + 2}", "ipv6": f"fd00::{i + 2}"} for i in range(start, count)]
        return self.client.report_partitions(parts)

    def desired(self):
        return self.client.desired_state()

    def report_instance(self, partition, instance_id, status, connection=None, reason=None):
        return self.client.report(instances=[{
            "partition": partition, "instance_id": instance_id, "status": status,
            "connection": connection, "reason": reason}])

    def instance_on(self, partition):
        for item in self.desired()["partitions"]:
            if item["reference"] == partition:
                return item["instance"]
        raise KeyError(partition)


@pytest.fixture
def make_node(master):
    """Enroll a new computer (unique name) with N partitions and given capacity; by
    default the admin's and public, or of the user whose token is ``owner``."""
    def make(partitions=0, owner=None, scope="public", **capacity):
        name = unique_name("node")
        token = master.client(owner).create_enrollment_token(name, scope=scope)["token"]
        answer = Client(master.url, retries=0).enroll(token, capacity=capacity)
        node = EnrolledNode(answer["computer"], Client(master.url, answer["credential"], retries=0))
        if partitions:
            node.report_partitions(partitions)
        return node
    return make


@pytest.fixture
def catalog_hello(master):
    """The shipped hello release in this master's catalog (with its schema); its URL."""
    import json

    url = f"{master.url}/software-releases/hello/software.cfg"
    client = master.client()
    if url not in {s["url"] for s in client.list_software()}:
        schema = json.loads((Path(__file__).resolve().parent.parent / "software-releases" /
                             "hello" / "software.cfg.json").read_text())
        client.add_software(url, unique_name("hello"), schema=schema)
    return url


@pytest.fixture
def reachable_dir():
    """A fresh directory every user can traverse (pytest's own tmp_path sits below a
    0700 directory, out of reach of the partition and software users)."""
    path = Path(tempfile.mkdtemp(prefix="slapnode-test-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_zygote_left():
    """A test that started containers in-process leaves no zygote behind it."""
    yield
    zygote.shared().close()

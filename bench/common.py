"""What the benchmarks share: timing a command, memory of a process, and a
node made for a benchmark (registered, formatted) and taken apart after it."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slapnode import format as fmt  # noqa: E402
from slapnode import nodeconfig  # noqa: E402
from slapnode.deploy import isolation as isolation_mod  # noqa: E402
from slapnode.deploy.partition import parts_of  # noqa: E402
from slapnode.format import users  # noqa: E402

SLAPNODE = [sys.executable, "-m", "slapnode"]


def timed(cmd, **kwargs):
    """Seconds ``cmd`` took; a failure raises with the end of its output."""
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")
    return took


class Gone(RuntimeError):
    """The process to measure is not there: nothing was measured."""


def rss_mb(pid):
    """Resident memory of ``pid`` in MB; ``Gone`` if there is no such process (never a
    0 that would "meet" a memory target)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    raise Gone(f"process {pid} is gone: its memory was not measured")


def pss_mb(pid):
    """Proportional set size (shared pages split among their users), MB; ``Gone``."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    raise Gone(f"process {pid} is gone: its memory was not measured")


def print_rows(rows, columns):
    """A table of dict rows; ``columns``: [(header, key)]; every row has an "ok" that
    says whether its figure is measured, meaningful and on target."""
    cells = [[h for h, _ in columns]]
    for row in rows:
        cells.append([str(row.get(k, "")) for _, k in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())


def make_node(master_url, admin_client, base, prefix, partitions, isolation, ipv4_range, name="bench",
              register=()):
    """Register and format a node whose names all start with ``prefix`` (``register``: more
    arguments for `node register`, e.g. --ca-fingerprint). Returns (config, path)."""
    token = admin_client.create_enrollment_token(name, scope="public")["token"]
    path = Path(base) / "node.cfg"
    timed(SLAPNODE + ["node", "register", "--master", master_url, "--token", token, "--config",
                      str(path), "--partitions", str(partitions), "--user-prefix", f"{prefix}u",
                      "--instance-root", str(Path(base) / "srv"), "--software-root",
                      str(Path(base) / "soft"), "--bridge", prefix, "--ipv4-range", ipv4_range,
                      "--isolation", isolation, *register])
    config = nodeconfig.load(path)
    config.software_user, config.state_dir = f"{prefix}s", str(Path(base) / "state")
    nodeconfig.save(config, path)
    timed(SLAPNODE + ["node", "format", "--config", str(path)])
    return config, path


def remove_node(config, prefix):
    """Stop every partition, unformat, and delete the users the benchmark made."""
    isolation = isolation_mod.isolation_for(config)
    for part in parts_of(config).values():
        isolation.stop(part, graceful=False)
    fmt.reconcile(config, None, remove_all=True, force=True)
    for user in users.all_users():
        if user.name.startswith(prefix) and user.gecos.startswith("slapnode"):
            users.delete_user(user.name)


# -- slapos.core beside us --------------------------------------------------------------

SLAPOS_NODE_CFG = """[slapos]
computer_id = slaposbench
master_url = http://127.0.0.1:{port}
software_root = {base}/opt
instance_root = {base}/srv
pidfile_software = {base}/var/sr.pid
pidfile_instance = {base}/var/cp.pid
pidfile_report = {base}/var/ur.pid
"""

SLAPPROXY_CFG = """
[slapproxy]
host = 127.0.0.1
port = {port}
database_uri = {base}/var/proxy.db
"""


@contextlib.contextmanager
def slapproxy(slapos, cfg, port, env=None):
    """slapos.core's minimal master, running until the block ends."""
    proxy = subprocess.Popen([str(slapos), "proxy", "start", "--cfg", str(cfg)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        for _ in range(250):
            if subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"]
                              ).returncode == 0:
                break
            time.sleep(0.02)
        yield proxy
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(10)


ANCHOR = ROOT.parent / "shared" / "anchors" / "slapos"
ANCHOR_STEPS = "# ---------------------------------------------------------------- 4. format"


@contextlib.contextmanager
def slapos_anchor(tail=None, partitions=None):
    """The anchor's re-runnable SlapOS set-up (../shared/anchors/slapos/RUN.sh.in: slapos.core
    from PyPI in a Python 3.12 virtualenv, slapproxy, the equivalent minimal release),
    rendered in a directory of its own: ``(work, RUN.sh)``, or None when the anchor or a
    Python 3.12 is missing. With ``tail``, the anchor's own steps from its format on are
    replaced by that shell text (``@A@`` is the directory); ``partitions`` sets its
    ``partition_amount``. Removed at the end (the script tears down what it made)."""
    python = sorted(Path.home().glob(".pyenv/versions/3.12*"))
    if not (ANCHOR / "RUN.sh.in").exists() or not python:
        yield None
        return
    missing = [tool for tool in ("rsync", "patchelf", "bc") if not shutil.which(tool)]
    if missing:                 # the anchor copies pyenv's Python 3.12 with these
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], capture_output=True)
    work = Path(tempfile.mkdtemp(prefix="slapos-anchor-"))
    os.chmod(work, 0o755)
    # slapgrid's supervisord puts its watchdog's logs in /tmp whatever TMPDIR says
    before = set(Path("/tmp").glob("watchdog-*---supervisor-*.log"))
    try:
        script = (ANCHOR / "RUN.sh.in").read_text()
        if tail is not None:
            script = script.split(ANCHOR_STEPS)[0] + tail
        if partitions is not None:
            script = script.replace("partition_amount = 10", f"partition_amount = {partitions}")
        script = script.replace("@A@", str(work)).replace("@PY312@", str(python[0]))
        (work / "RUN.sh").write_text(script)
        (work / "sr").mkdir()
        for source in (ANCHOR / "sr").iterdir():
            (work / "sr" / source.name).write_text(source.read_text().replace("@A@", str(work)))
        yield work, work / "RUN.sh"
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for left in set(Path("/tmp").glob("watchdog-*---supervisor-*.log")) - before:
            left.unlink(missing_ok=True)

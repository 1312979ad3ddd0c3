"""`slapnode standalone` run for a test: a real master and this machine as its node,
with names unique to the run, stopped and cleaned up whatever happens."""

import contextlib
import os
import pwd
import re
import secrets
import signal
import subprocess
import time

from slapnode import format as fmt
from slapnode import nodeconfig
from slapnode.deploy import cgroups, isolation

from .conftest import free_port, slapnode_cmd
from .test_instances_system import _remove_ours


class Standalone:
    def __init__(self, base, partitions):
        self.tag = secrets.token_hex(3)
        self.base, self.data = base, base / "standalone"
        self.listen = f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.listen}"
        self.user_prefix = f"sn{self.tag}u"
        home = base / "home"
        home.mkdir()
        self.env = {**os.environ, "HOME": str(home)}
        self.env.pop("SLAPNODE_CLIENT_CONFIG", None)
        self.log_path = base / "standalone.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            slapnode_cmd("standalone", "--data-dir", str(self.data), "--listen", self.listen,
                         "--partitions", str(partitions), "--user-prefix", self.user_prefix,
                         "--bridge", f"snsa{self.tag}", "--ipv4-range",
                         f"10.{230 + secrets.randbelow(20)}.{secrets.randbelow(250)}.0/24"),
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.config = None

    def log(self):
        return self.log_path.read_text()

    def wait_running(self, seconds=60):
        deadline = time.monotonic() + seconds
        while "node daemon running" not in self.log():
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)
        self.config = nodeconfig.load(self.data / "node.cfg")
        return self

    @property
    def token(self):
        return re.search(r"export SLAPNODE_TOKEN=(\S+)", self.log()).group(1)

    @property
    def admin_token(self):
        return (self.data / "master" / "admin.token").read_text().strip()

    def interrupt(self, seconds=30):
        """Ctrl-C, as a user would stop it."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:   # say what it was doing (and what ran) meanwhile
            with contextlib.suppress(ProcessLookupError):   # its threads' stacks, to its log
                os.kill(self.process.pid, signal.SIGUSR1)
                time.sleep(1)
            tree = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,args", "--forest", "-s",
                                   str(self.process.pid)], capture_output=True, text=True).stdout
            raise AssertionError(f"standalone still running {seconds} s after Ctrl-C; its log "
                                 f"ends:\n{self.log()[-8000:]}\nits processes:\n{tree[-3000:]}") from None

    def cleanup(self):
        """Whatever happened: nothing of it is left (never raises an assertion)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log.close()
        if (self.data / "node.cfg").exists():   # frozen processes cannot die: thaw first
            cgroups.Parent(nodeconfig.load(self.data / "node.cfg")).freeze(False)
        for user in pwd.getpwall():         # builds and services first: users in use stay
            if user.pw_name.startswith(self.user_prefix):
                isolation.kill_all(user.pw_uid)
        config = self.config
        if config is None and (self.data / "node.cfg").exists():
            config = nodeconfig.load(self.data / "node.cfg")
        try:
            if config is not None:
                fmt.reconcile(config, None, remove_all=True, force=True)
        finally:
            _remove_ours(self.user_prefix, f"{self.user_prefix}soft")


@contextlib.contextmanager
def standalone(base, partitions=2):
    running = Standalone(base, partitions)
    try:
        yield running
    finally:
        running.cleanup()

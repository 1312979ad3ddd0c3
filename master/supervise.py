"""The master's worker processes, kept running: ``master serve --workers N``.

Owns starting N workers (``python -m slapnode.master.worker``, each a fresh
interpreter serving the one listening socket it inherits), starting one that died
again (after 0.5 s, doubling to 30 s), and stopping them all on SIGTERM or SIGINT,
gracefully first. It imports nothing but the standard library, so that the process
that only supervises stays small: ``master serve`` replaces itself with it once the
database is checked and the socket bound (unless it also serves the DNS zone).
The workers' settings (the database URL among them) travel in the environment,
never on a command line that ``ps`` shows.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

RESTART_WAIT = (0.5, 30.0)
ENV = "SLAPNODE_MASTER_WORKER"
log = logging.getLogger("slapnode.master")


def run(settings, fd, count, stopping=None):
    """Keep ``count`` workers serving socket ``fd`` until ``stopping`` is set (by default:
    SIGTERM or SIGINT)."""
    if stopping is None:
        stopping = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _s, _f: stopping.set())

    def start(index):
        env = {**os.environ, ENV: json.dumps({**settings, "fd": fd, "index": index})}
        # a worker's threads (database work) would each keep a malloc arena of their own:
        # two are plenty for one event loop and its pool (unless the admin says otherwise)
        env.setdefault("MALLOC_ARENA_MAX", "2")
        return subprocess.Popen([sys.executable, "-m", "slapnode.master.worker"], env=env,
                                pass_fds=(fd,))
    workers = [start(i) for i in range(count)]
    waits, due = [RESTART_WAIT[0]] * count, [0.0] * count
    try:
        while not stopping.is_set():
            for i, worker in enumerate(workers):
                if worker.poll() is None or stopping.is_set():
                    continue
                now = time.monotonic()
                if not due[i]:
                    log.warning("worker %d ended (exit %s); starting it again in %.1f s",
                                i, worker.returncode, waits[i])
                    due[i] = now + waits[i]
                    waits[i] = min(waits[i] * 2, RESTART_WAIT[1])
                elif now >= due[i]:
                    workers[i], due[i] = start(i), 0.0
            stopping.wait(0.25)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        deadline = time.monotonic() + 10
        for worker in workers:
            try:
                worker.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(5)


def main():
    """``python -m slapnode.master.supervise`` (what ``master serve`` execs into)."""
    logging.basicConfig(format="%(levelname)s: %(message)s")
    settings = json.loads(os.environ.pop(ENV))
    run(settings, settings.pop("fd"), settings.pop("count"))


if __name__ == "__main__":
    main()

"""The volunteer's policy at work on the node: watching the owner's use of the
machine, the clock and the owner's commands, and holding the partitions to it.

Owns the node side of the policy: the owner's commands' state
(``<state_dir>/volunteer.json``: paused, draining; kept across restarts, so a
restarted agent keeps them), the measure of the owner's activity (the CPU load of
everything but the partitions, from /proc/stat minus the partitions' cgroup; an
active local logind session where logind runs), and ``PolicyWatch``, the thread of
``node run`` that applies the verdict every half second: the partitions' totals
and the freezer of their parent cgroup (``deploy/cgroups.py``). The decision is
``policy.decide`` (pure). A config change (``node policy set``) is read again
within a tick: no restart.
"""

import datetime as dt
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from . import nodeconfig
from . import policy as policy_mod
from .deploy import cgroups

STATE_FILE = "volunteer.json"
TICK = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def state_path(config):
    return Path(config.state_dir) / STATE_FILE


def read_state(config):
    """The owner's commands in force: {"paused": bool, "draining": bool}."""
    try:
        data = json.loads(state_path(config).read_text())
    except (OSError, ValueError):
        data = {}
    return {"paused": data.get("paused") is True, "draining": data.get("draining") is True}


def write_state(config, **changes):
    state = {**read_state(config), **changes}
    path = state_path(config)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True))
    os.replace(tmp, path)
    return state


def machine_busy_seconds():
    """CPU seconds the whole machine spent busy since boot (every CPU together)."""
    with open("/proc/stat") as stream:
        fields = stream.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class Activity:
    """How much the owner (everything but the partitions) uses the machine."""

    def __init__(self, parent, cpus=None, session_probe=None):
        self.parent = parent
        self.cpus = cpus or os.cpu_count() or 1
        self.last = None
        self.session_probe = session_probe or logind_session_active
        self.session_checked, self.session = 0.0, False

    def owner_cpu_pct(self):
        now = time.monotonic()
        sample = (now, machine_busy_seconds(), self.parent.cpu_seconds())
        last, self.last = self.last, sample
        if last is None or now - last[0] <= 0:
            return 0.0
        owner = (sample[1] - last[1]) - (sample[2] - last[2])
        return max(0.0, 100.0 * owner / ((now - last[0]) * self.cpus))

    def session_active(self):
        if time.monotonic() - self.session_checked > 5:
            self.session_checked = time.monotonic()
            self.session = self.session_probe()
        return self.session


def logind_session_active():
    """A local user session that is not idle (logind's IdleHint), where logind runs."""
    if not shutil.which("loginctl") or not Path("/run/systemd/seats").exists():
        return False
    try:
        listed = subprocess.run(["loginctl", "list-sessions", "--no-legend"], capture_output=True,
                                text=True, timeout=2).stdout.split("\n")
        for line in filter(None, (line.split() for line in listed)):
            shown = subprocess.run(["loginctl", "show-session", line[0], "-p", "IdleHint", "-p",
                                    "Remote", "-p", "Class", "-p", "Active"],
                                   capture_output=True, text=True, timeout=2).stdout
            props = dict(p.split("=", 1) for p in shown.splitlines() if "=" in p)
            if props.get("Class") == "user" and props.get("Remote") == "no" and \
                    props.get("Active") == "yes" and props.get("IdleHint") == "no":
                return True
    except (OSError, subprocess.SubprocessError):
        return False
    return False


def local_now():
    return dt.datetime.now().astimezone()


class PolicyWatch:
    """Applies the policy every TICK seconds; calls ``on_change(availability)`` when
    what the node can do changes (the agent reports it and holds its passes)."""

    def __init__(self, config, config_path=None, on_change=None, now=local_now,
                 clock=time.monotonic, activity=None, parent=None):
        self.config = config
        self.config_path = nodeconfig.config_path(config_path) if config_path else None
        self.on_change = on_change or (lambda availability: None)
        self.now, self.clock = now, clock
        self.parent = parent or cgroups.Parent(config)
        self.parent.ensure()
        self.activity = activity or Activity(self.parent)
        self.policy = config.policy
        self.windows = policy_mod.parse_hours(self.policy.hours)
        self.mtime = self._mtime()
        self.applied_limits = None
        self.busy_since = None
        self.verdict = None
        self.availability = None
        self.stopping = threading.Event()
        self.thread = None
        self.error = None

    def _mtime(self):
        try:
            return self.config_path.stat().st_mtime_ns if self.config_path else None
        except OSError:
            return None

    def _reload(self):
        mtime = self._mtime()
        if mtime is None or mtime == self.mtime:
            return
        self.mtime = mtime
        try:
            fresh = nodeconfig.load(self.config_path).policy
        except Exception as exc:        # a half-written or broken file: keep the last good one
            self.error = f"policy not reloaded: {exc}"
            return
        self.policy, self.config.policy = fresh, fresh
        self.windows = policy_mod.parse_hours(fresh.hours)
        self.error = None

    def _adopt(self):
        """Without LXC, the partitions' processes are moved below the parent cgroup (each
        partition in a child of its own); new ones follow within a tick."""
        from .deploy.partition import parts_of
        from .usage import processes_by_uid

        by_uid = processes_by_uid()
        marker = f"/{self.parent.name}/"
        for part in parts_of(self.config).values():
            for pid in by_uid.get(part.uid, []):
                try:
                    with open(f"/proc/{pid}/cgroup") as stream:
                        if marker in stream.read():
                            continue
                    self.parent.attach(part.user, pid)
                except OSError:
                    continue        # gone meanwhile

    @property
    def running(self):
        return self.verdict is None or self.verdict.run

    def step(self):
        """One look: reload, observe, decide, apply. Returns the availability."""
        self._reload()
        limits = (self.policy.cpu_limit_pct, self.policy.memory_limit_mb)
        if limits != self.applied_limits:
            self.parent.set_limits(*limits)
            self.applied_limits = limits
        commands = read_state(self.config)
        observed = policy_mod.Observed(now=self.now(), clock=self.clock(), paused=commands["paused"])
        if self.policy.run_when == "idle":
            observed.owner_cpu_pct = self.activity.owner_cpu_pct()
            observed.session_active = self.activity.session_active()
            if policy_mod.owner_busy(self.policy, observed):
                self.busy_since = observed.clock
            observed.busy_since = self.busy_since
        else:
            self.busy_since = None
        if self.config.isolation == "user":
            self._adopt()
        self.verdict = policy_mod.decide(self.policy, observed, self.windows)
        if self.parent.frozen() == self.verdict.run:    # the kernel is not as decided yet
            self.parent.freeze(not self.verdict.run)
        state, reason = self.verdict.state, self.verdict.reason
        if commands["draining"] and self.verdict.run:
            state, reason = "draining", "draining: the owner takes no new instances"
        availability = {"state": state, "reason": reason, "next_change": self.verdict.next_change,
                        "max_instances": self.policy.max_instances}
        if availability != self.availability:
            self.availability = availability
            self.on_change(availability)
        return availability

    def start(self):
        self.step()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="policy")
        self.thread.start()

    def _loop(self):
        while not self.stopping.wait(TICK):
            try:
                self.step()
            except OSError as exc:          # a cgroup file gone: say it, try again
                self.error = f"policy not applied: {exc}"

    def stop(self):
        """Stop watching. The partitions stay as they are (frozen ones stay frozen: the
        agent may be restarted; ``node resume`` or a new agent thaws them)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(5)

"""An instance's status from what is observed in its partition. Pure.

Shared by the agent (root, outside) and the partition side (inside, while it
waits for fresh services): the same rule decides "ready" on both sides.
"""

from ..states import STOPPED, InstanceStatus
from .supervisor import FAILED_STATES


def status_of(requested, programs, promise_results, running):
    """(status, reason). ``programs``: {name: (state, description)};
    ``promise_results``: [{"name", "ok", "message"}]; ``running``: supervisord answers."""
    if requested == STOPPED:
        return (InstanceStatus.STOPPED, "") if not running else (InstanceStatus.DEPLOYING, "stopping")
    failed = {n: d for n, (state, d) in programs.items() if state in FAILED_STATES}
    if failed:
        name, description = sorted(failed.items())[0]
        return InstanceStatus.ERROR, f"service {name} keeps failing ({description or 'exited'})"
    if not running or any(state not in ("RUNNING", "STARTING") for state, _ in programs.values()):
        return InstanceStatus.DEPLOYING, "starting services"
    broken = [p for p in promise_results if not p["ok"]]
    if broken:
        return InstanceStatus.DEPLOYING, f"promise {broken[0]['name']}: {broken[0]['message']}"
    # A service still in its first second counts once the promises vouch for it.
    if not promise_results and any(state != "RUNNING" for state, _ in programs.values()):
        return InstanceStatus.DEPLOYING, "starting services"
    return InstanceStatus.READY, ""

"""The states of instances and supplies, as data.

No dependencies: the master, the agent and the CLI all read these names.
Like supervisor's ``states.py``, every state is a plain constant and the
allowed transitions are written down next to them.
"""

# What a user asks for an instance.
STARTED = "started"
STOPPED = "stopped"
DESTROYED = "destroyed"
REQUESTED_STATES = (STARTED, STOPPED, DESTROYED)


class InstanceStatus:
    """What an instance actually is, as the master knows it.

    pending    -> no fitting partition yet; placed as soon as one appears
    deploying  -> placed (or changed); the node has not reported it done
    ready      -> deployed, running, every promise passing (requested started)
    stopped    -> deployed and stopped, files kept (requested stopped)
    error      -> the node reported a failure (build, deploy, crash loop, promise)
    frozen     -> deployed, held by the volunteer's policy (the owner uses the machine,
                  outside the hours allowed, paused): its processes are frozen, not killed;
                  the reason says which and until when
    unreachable-> its node is lost (it stopped polling the master); the reason says when it
                  was last seen; ``instance request --move`` puts it on another node
    destroyed  -> gone; its partition is free again
    """

    PENDING = "pending"
    DEPLOYING = "deploying"
    READY = "ready"
    STOPPED = "stopped"
    ERROR = "error"
    FROZEN = "frozen"
    UNREACHABLE = "unreachable"
    DESTROYED = "destroyed"

    # Statuses a node may report for an instance it holds.
    REPORTABLE = (DEPLOYING, READY, STOPPED, ERROR, FROZEN, DESTROYED)


def settled_for(requested_state, status):
    """True when ``status`` is the end of the road for ``requested_state``.

    A started instance settles at ready; a stopped one at stopped; a destroyed
    one at destroyed; error settles every request (the user must act), and so does
    frozen (the volunteer's policy holds it: the answer says why, and waiting on would
    leave the user wondering), and so does unreachable (its node is lost).
    """
    if status in (InstanceStatus.ERROR, InstanceStatus.FROZEN, InstanceStatus.UNREACHABLE):
        return True
    wanted = {
        STARTED: InstanceStatus.READY,
        STOPPED: InstanceStatus.STOPPED,
        DESTROYED: InstanceStatus.DESTROYED,
    }[requested_state]
    return status == wanted


class SupplyStatus:
    """Where a software release stands on one node.

    pending   -> supplied, the node has not started on it
    building  -> the node is building it (or fetching it from the cache)
    available -> built; instances can be deployed from it
    error     -> the build failed; ``log_tail`` says why
    destroyed -> removed from the node (the supply row goes away)
    """

    PENDING = "pending"
    BUILDING = "building"
    AVAILABLE = "available"
    ERROR = "error"
    DESTROYED = "destroyed"

    REPORTABLE = (BUILDING, AVAILABLE, ERROR, DESTROYED)


# What an administrator asks of a supply.
SUPPLY_REQUESTS = ("available", DESTROYED)

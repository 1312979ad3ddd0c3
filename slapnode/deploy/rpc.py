"""The partition's supervisord, extended: XML-RPC ``slapnode.runPromises(names)``
and the warm deployer (``deploy/deployer.py``).

supervisord runs inside the partition's container as the partition user; this
module is loaded into it (``[rpcinterface:slapnode]`` in its configuration,
``deploy/supervisor.render``). It runs the named promises in threads of that
process, so a health check costs the root agent one call over the socket it
already uses, and no new process: the checks still happen inside the
partition, as its user, in its network namespace.

Promises that answer within ``QUICK`` seconds (local checks take milliseconds)
are answered at once; slower ones are answered through supervisor's deferred
responses, so that supervisord's own loop never waits on a slow service.
"""

import threading

QUICK = 0.5


class PromiseInterface:
    def __init__(self, supervisord, root):
        self.supervisord = supervisord
        self.root = root

    def runPromises(self, names):
        """Run the named promises; [{"name", "ok", "message", "interval"}]."""
        from . import promises

        result = {}

        def work():
            try:
                result["value"] = promises.run_all(self.root, [str(n) for n in names])
            except Exception as exc:        # said to the caller, never raised in supervisord
                result["value"] = [{"name": str(n), "ok": False, "interval": 60.0,
                                    "message": f"cannot run promises: {exc}"[:500]}
                                   for n in names]
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(QUICK)
        if not thread.is_alive():
            return result["value"]
        from supervisor.http import NOT_DONE_YET

        def deferred():
            return NOT_DONE_YET if thread.is_alive() else result["value"]
        deferred.delay = 0.05
        return deferred


def make(supervisord, root):
    """supervisor's rpcinterface factory; also forks the warm deployer
    (``deploy/deployer.py``) from this supervisord, before its loop."""
    from . import deployer

    try:
        deployer.serve(root)
    except OSError as exc:          # the agent then deploys through lxc-attach
        supervisord.options.logger.warn(f"slapnode: no warm deployer: {exc}")
    return PromiseInterface(supervisord, root)

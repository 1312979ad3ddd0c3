"""Timelines for profiling a request's path: with ``SLAPNODE_TRACE=1`` in its
environment, a process writes ``trace <wall clock> <what>`` lines to stderr at
the steps that matter (the agent: desired state received, pass, partition work,
report). Off, a mark costs one test. bench/README.md says how to read them."""

import os
import sys
import time

ON = bool(os.environ.get("SLAPNODE_TRACE"))


def mark(what):
    if ON:
        sys.stderr.write(f"trace {time.time():.3f} {what}\n")
        sys.stderr.flush()

"""slapnode: a partition-based PaaS in the line of SlapOS.

The node agent and the ``slapnode`` command live in this package; the master
service lives in ``slapnode.master`` (the top-level ``master/`` directory).
"""

__version__ = "0.1.0"

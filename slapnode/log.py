"""Where the node daemon says what it does: stderr, or a file that never grows
past its cap (rotated: ``node run --log-file``; under systemd, journald bounds
stderr). Every line is made printable first: a partition's error text may hold
escape sequences meant for a terminal."""

import logging
import logging.handlers
import time

MAX_BYTES = 5 << 20
BACKUPS = 2


def sayer(path=None, echo=None):
    """A ``say(message)`` for the daemon: to ``echo`` (stderr) or to a rotated file."""
    from .cli.context import printable

    if path is None:
        return lambda message: echo(printable(message))
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                                   encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"slapnode.node.{path}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)

    def say(message):
        logger.info("%s %s", time.strftime("%Y-%m-%d %H:%M:%S"), printable(message))
    return say

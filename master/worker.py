"""One worker of the master: ``python -m slapnode.master.worker``, started by
``master.supervise`` with the listening socket and its settings (in the environment)."""

import json
import os
import socket

from .supervise import ENV


def main():
    settings = json.loads(os.environ.pop(ENV))
    from .service import serve_worker

    sock = socket.socket(fileno=settings.pop("fd"))
    serve_worker(settings, sock, settings.pop("index"))


if __name__ == "__main__":
    main()

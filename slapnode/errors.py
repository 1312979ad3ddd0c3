"""Errors that carry their own exit code and a one-line message.

Like click's exceptions: whatever raises one of these has already said what
went wrong and what to do; the CLI prints ``message`` on one line and exits
with ``exit_code``.
"""


class SlapnodeError(Exception):
    """A failure the user can act on. ``str(err)`` is the one line to print."""

    exit_code = 1

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class UsageError(SlapnodeError):
    """Bad arguments or input files: exit code 2, like click's usage errors."""

    exit_code = 2


class ParameterError(UsageError):
    """Instance parameters (XML, JSON, KEY=VALUE) that cannot be accepted."""


class MasterError(SlapnodeError):
    """The master refused a call or could not be reached."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status

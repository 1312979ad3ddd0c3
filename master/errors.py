"""Errors the master's logic raises; the app turns each into an HTTP answer.

Every error is one line that says what is wrong and, where it can, what to
do about it. The status code says whose fault it is (4xx: the caller's).
"""


class ApiError(Exception):
    status = 400

    def __init__(self, message, status=None, fields=None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}      # {parameter: what is wrong with it}, when known
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Invalid(ApiError):
    """The body is well-formed but its content breaks a rule (schema, filter)."""

    status = 422

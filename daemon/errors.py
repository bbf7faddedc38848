"""Outcomes a user can cause, as typed exceptions.

They are raised anywhere below the edge and mapped to HTTP answers in one
place (`daemon.api.middleware`), so no handler picks status codes by itself.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every error whose message is safe and useful to show the client."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(UserError):
    """The request body or a parameter is malformed; `errors` name each field path."""

    status = 400
    code = "invalid_input"

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class Unauthorized(UserError):
    status = 401
    code = "unauthorized"


class Forbidden(UserError):
    status = 403
    code = "forbidden"


class NotFound(UserError):
    status = 404
    code = "not_found"


class InvalidTransition(UserError):
    status = 409
    code = "invalid_transition"


class PayloadTooLarge(UserError):
    status = 413
    code = "payload_too_large"


class Overloaded(UserError):
    """We cannot take this now; the client should retry after `retry_after` seconds.

    The status differs by client: Alertmanager retries only 5xx (so 503),
    PagerDuty clients expect 429.
    """

    code = "overloaded"

    def __init__(
        self, message: str, *, retry_after: int, status: int = 503, reason: str = "overloaded"
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.reason = reason

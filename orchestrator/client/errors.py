"""The client's error tree: one exception per kind of answer, mapped from the API's JSON
error body ``{"error": {"code", "message", "details"}}`` and its HTTP status.

Each is an ``OrchestratorError``, so the CLI prints any of them as one line.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from orchestrator.errors import OrchestratorError


class ClientError(OrchestratorError):
    """Raised for anything that goes wrong between this client and the API."""

    code = "client_error"


class ConfigurationError(ClientError):
    """Raised when no API URL or key is given and ``ORCH_API_URL``/``ORCH_API_KEY`` are unset."""

    code = "client_configuration"


class ConnectionFailed(ClientError):
    """Raised when the API cannot be reached (wrong URL, refused, timed out, stream lost)."""

    code = "connection_failed"


class RunTimeout(ClientError, TimeoutError):
    """Raised when ``Run.wait(timeout)`` runs out before the run's final event."""

    code = "timeout"


class ApiError(ClientError):
    """Raised when the API answers with an error status; carries what it said."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"API {status} {code}: {message}", details=details)
        self.status = status
        self.code = code
        self.message = message
        #: Seconds the API asked to wait before trying again (``Retry-After``), if it said.
        self.retry_after = retry_after


class BadRequest(ApiError):
    """Raised on 400: the request could not be parsed."""


class Unauthorized(ApiError):
    """Raised on 401: no key, or an unknown or revoked one."""


class Forbidden(ApiError):
    """Raised on 403: the key's scope does not allow this."""


class NotFound(ApiError):
    """Raised on 404: no such template, execution or deliverable (or not this client's)."""


class Conflict(ApiError):
    """Raised on 409: the request contradicts the current state (cancel a finished run)."""


class PayloadTooLarge(ApiError):
    """Raised on 413: the body is over the API's limit."""


class ValidationFailed(ApiError):
    """Raised on 422: well-formed but invalid (parameters, a template, a run that can never fit)."""


class QuotaExceeded(ApiError):
    """Raised on 429: over a quota, a rate or the waiting runs allowed; see ``retry_after``."""


class Unavailable(ApiError):
    """Raised on 503: a dependency of the API is down."""


class ServerError(ApiError):
    """Raised on any other 5xx."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: QuotaExceeded,
    503: Unavailable,
}


def retry_after(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds (it may be a number or an HTTP date), or None."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def from_response(response: httpx.Response) -> ApiError:
    """The typed exception for an error answer; a body that is not the API's error shape
    (a proxy's page, a wrong URL) still gives one clear exception."""
    status = response.status_code
    kind = BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    try:
        error = response.json()["error"]
        code, message, details = str(error["code"]), str(error["message"]), error.get("details")
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200]
        code = "not_an_orchestrator_answer"
        where = f"{response.request.method} {response.request.url}"
        message = f"{where}: {text or response.reason_phrase}"
        details = None
    return kind(status, code, message, details, retry_after=retry_after(response.headers))

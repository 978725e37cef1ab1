"""One error tree for the whole product.

Every error a user can cause is an ``OrchestratorError``; its ``http_status`` and ``code`` are
the one place where the API learns how to answer it, and the CLI prints ``str(error)``.
"""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    """Raised for any failure the product anticipates; the root of the tree."""

    http_status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The SPEC's error body."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ConfigError(OrchestratorError):
    """Raised when an ``ORCH_*`` setting is malformed or names something unreachable."""

    http_status = 500
    code = "config_error"

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}", details={"variable": variable})
        self.variable = variable


class BadRequest(OrchestratorError):
    """Raised when a request cannot be parsed at all (malformed JSON, wrong content type)."""

    http_status = 400
    code = "bad_request"


class ValidationFailed(OrchestratorError):
    """Raised when well-formed input is invalid: a template, parameters, a request body."""

    http_status = 422
    code = "validation_failed"


class Unauthorized(OrchestratorError):
    """Raised when no API key, or an unknown or revoked one, is presented."""

    http_status = 401
    code = "unauthorized"


class Forbidden(OrchestratorError):
    """Raised when a key lacks the scope, or the execution belongs to another client."""

    http_status = 403
    code = "forbidden"


class NotFound(OrchestratorError):
    """Raised when a template, execution, worker or object does not exist."""

    http_status = 404
    code = "not_found"


class Conflict(OrchestratorError):
    """Raised when the request contradicts current state (cancel a finished run, ...)."""

    http_status = 409
    code = "conflict"


class PayloadTooLarge(OrchestratorError):
    """Raised when a request body exceeds the configured limit."""

    http_status = 413
    code = "payload_too_large"


class ResourceExhausted(OrchestratorError):
    """Raised when a run does not fit the quotas, rates or capacity now; carries when to retry."""

    http_status = 429
    code = "resource_exhausted"

    def __init__(self, message: str, *, retry_after_s: float | None = None, details: Any = None):
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class DependencyUnavailable(OrchestratorError):
    """Raised when Redis, the database, object storage or the broker cannot be reached."""

    http_status = 503
    code = "dependency_unavailable"


class StorageError(OrchestratorError):
    """Raised when object storage refuses or loses an object."""

    http_status = 500
    code = "storage_error"


class ChecksumMismatch(StorageError):
    """Raised when an object's bytes do not hash to the checksum its reference carries."""

    code = "checksum_mismatch"


class ObjectMissing(StorageError):
    """Raised when a referenced object is gone or past its expiry."""

    http_status = 404
    code = "object_missing"


class StageFailed(OrchestratorError):
    """Raised inside a stage to fail it; ``transient`` failures are retried by policy."""

    code = "stage_failed"
    transient = False


class TransientStageError(StageFailed):
    """Raised for failures worth retrying: network, timeouts, 429 and 5xx from a provider."""

    code = "stage_transient_error"
    transient = True

    def __init__(self, message: str, *, retry_after_s: float | None = None, details: Any = None):
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s

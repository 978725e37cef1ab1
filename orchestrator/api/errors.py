"""Every error leaves as ``{"error": {"code", "message", "details"}}`` with its status."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from kombu.exceptions import OperationalError as BrokerError
from pydantic import ValidationError
from redis import RedisError
from sqlalchemy.exc import DataError
from sqlalchemy.exc import OperationalError as DatabaseError
from werkzeug.exceptions import HTTPException

from orchestrator.api.models import ErrorBody
from orchestrator.errors import OrchestratorError, ResourceExhausted

__all__ = ["ErrorBody", "register", "validation_error"]

#: Failures of Redis, the database or the broker: the API is fine, a dependency is not.
DEPENDENCY_ERRORS = (RedisError, DatabaseError, BrokerError, ConnectionError)


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    return response


def validation_error(exc: ValidationError) -> Response:
    """flask-openapi3's hook: a body, query or path that fails its model."""
    problems = [
        {"where": ".".join(str(p) for p in e["loc"]) or "body", "problem": e["msg"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = problems[0] if problems else {"where": "body", "problem": "invalid"}
    return error_response(
        422, "validation_failed", f"{first['where']}: {first['problem']}", problems
    )


def register(app: Flask) -> None:
    @app.errorhandler(OrchestratorError)
    def _product(exc: OrchestratorError) -> Response:
        response = error_response(exc.http_status, exc.code, exc.message, exc.details)
        if isinstance(exc, ResourceExhausted) and exc.retry_after_s:
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(DataError)
    def _data(exc: DataError) -> Response:
        # The database refused a value (a NUL byte, an out-of-range number): the input's fault.
        problem = str(exc.orig).splitlines()[0] if exc.orig else "invalid value"
        return error_response(422, "validation_failed", f"a value cannot be stored: {problem}")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, DEPENDENCY_ERRORS):
            return error_response(503, "dependency_unavailable", f"a dependency is down: {exc}")
        app.logger.exception("unexpected error")
        return error_response(500, "internal_error", "unexpected error; it has been logged")

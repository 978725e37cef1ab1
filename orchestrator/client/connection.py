"""Where the API is, with which key, and how long to keep retrying: shared by both clients.

``ORCH_API_URL`` and ``ORCH_API_KEY`` are read only when the caller passes no URL or key,
at construction: importing the client reads nothing.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from orchestrator.client.errors import ApiError, ConfigurationError, ConnectionFailed

log = logging.getLogger("orchestrator.client")

#: Statuses worth asking again: over a quota or rate (429), a dependency down (503).
RETRIABLE = frozenset({429, 503})
#: Reconnects in a row without a new event before a progress stream is given up.
MAX_RECONNECTS = 10
#: How long a progress stream may stay silent: the API sends a comment every 15 s.
STREAM_READ_TIMEOUT_S = 45.0


@dataclass(frozen=True)
class Retries:
    """429 and 503 are retried with exponential backoff, or after the ``Retry-After`` the API
    sent, as long as the next attempt starts within ``deadline_s`` of the first."""

    deadline_s: float = 60.0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, error: ApiError) -> float:
        """Seconds before attempt ``attempt + 1``."""
        if error.retry_after is not None:
            return error.retry_after
        return float(min(self.max_backoff_s, self.backoff_s * 2**attempt))


NO_RETRIES = Retries(deadline_s=0)


def endpoint(
    url: str | None, key: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """The API's base URL and key: as given, else ``ORCH_API_URL`` / ``ORCH_API_KEY``."""
    env = os.environ if environ is None else environ
    url = url or env.get("ORCH_API_URL", "").strip()
    key = key or env.get("ORCH_API_KEY", "").strip()
    if not url:
        raise ConfigurationError("no API URL: pass url= or set ORCH_API_URL")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigurationError(f"API URL {url!r} is not an http(s) URL with a host")
    if not key:
        raise ConfigurationError("no API key: pass key= or set ORCH_API_KEY")
    return url.rstrip("/"), key


def http_options(url: str, key: str, timeout: float) -> dict[str, Any]:
    """Keyword arguments of ``httpx.Client`` / ``httpx.AsyncClient`` for this API."""
    from orchestrator import __version__

    return {
        "base_url": url,
        "headers": {
            "Authorization": f"Bearer {key}",
            "User-Agent": f"orchestrator-client/{__version__}",
        },
        "timeout": httpx.Timeout(timeout, read=max(timeout, 60.0)),
    }


def unreachable(url: str, exc: httpx.HTTPError) -> ConnectionFailed:
    """A transport failure as one sentence, never httpx's traceback."""
    reason = str(exc) or exc.__class__.__name__
    return ConnectionFailed(f"cannot reach the API at {url}: {reason}")


def stream_headers(last_event_id: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers


def execute_body(
    template: str, parameters: Mapping[str, Any] | None, priority: str, request_id: str | None
) -> dict[str, Any]:
    """The body of ``POST /execute``; the request id is fixed before the first attempt, so a
    retried submission is the same submission."""
    return {
        "request_id": request_id or f"py-{uuid.uuid4().hex}",
        "template_name": template,
        "parameters": dict(parameters or {}),
        "priority": priority,
    }


def log_retry(method: str, path: str, error: ApiError, delay: float) -> None:
    log.info(
        "retrying %s %s in %.1f s after %s %s",
        method,
        path,
        delay,
        error.status,
        error.code,
        extra={"status": error.status, "delay_s": delay, "retry_after": error.retry_after},
    )

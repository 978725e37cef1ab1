"""The Orchestrator API from Python.

    from orchestrator.client import Client

    client = Client()  # ORCH_API_URL, ORCH_API_KEY
    run = client.submit("market_research_pipeline", {"topic": "coffee"})
    for event in run.events():
        print(event.stage, event.progress, event.message)
    run.download("report.html")

``AsyncClient`` is the same with ``await``. Every error is one of ``orchestrator.client.errors``
(``NotFound``, ``QuotaExceeded`` with ``retry_after``, ``ConnectionFailed``, ...).
"""

from orchestrator.client.aio import AsyncClient, AsyncRun
from orchestrator.client.connection import Retries
from orchestrator.client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    ConfigurationError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RunTimeout,
    ServerError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from orchestrator.client.models import Deliverable, Estimate, Event, Execution
from orchestrator.client.sync import Client, Run

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncRun",
    "BadRequest",
    "Client",
    "ClientError",
    "ConfigurationError",
    "Conflict",
    "ConnectionFailed",
    "Deliverable",
    "Estimate",
    "Event",
    "Execution",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "Retries",
    "Run",
    "RunTimeout",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]

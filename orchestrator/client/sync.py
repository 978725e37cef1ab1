"""``Client``: the API from Python, blocking (httpx + httpx-sse)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import httpx
from httpx_sse import SSEError, connect_sse

import orchestrator.client.connection as conn
from orchestrator.client.errors import (
    ApiError,
    ConnectionFailed,
    NotFound,
    RunTimeout,
    from_response,
)
from orchestrator.client.models import (
    Deliverable,
    Estimate,
    Event,
    Execution,
    ExecutionPage,
    Priority,
    TemplateView,
)

#: Rows of a listing (templates, workers).
Rows = list[dict[str, Any]]


class Client:
    """A session with one Orchestrator API.

    ``Client()`` reads ``ORCH_API_URL`` and ``ORCH_API_KEY``; errors are the typed exceptions
    of ``orchestrator.client.errors``; 429 and 503 are retried within ``retries.deadline_s``.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: conn.Retries | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url, key = conn.endpoint(url, key)
        self.retries = retries or conn.Retries()
        self.http = httpx.Client(transport=transport, **conn.http_options(self.url, key, timeout))
        self.templates = Templates(self)
        self.workers = Workers(self)
        self.resources = Resources(self)

    # -- the session -------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call, its JSON answer; an error answer raises its typed exception, and 429 or
        503 is asked again after ``Retry-After`` (or a backoff) while the deadline allows."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise conn.unreachable(self.url, exc) from None
            if response.status_code < 400:
                return response.json() if response.content else None
            error = from_response(response)
            delay = self.retries.delay(attempt, error)
            late = time.monotonic() + delay - started > self.retries.deadline_s
            if response.status_code not in conn.RETRIABLE or late:
                raise error
            conn.log_retry(method, path, error, delay)
            time.sleep(delay)
            attempt += 1

    # -- runs --------------------------------------------------------------------------

    def estimate(self, template: str, parameters: Mapping[str, Any] | None = None) -> Estimate:
        """Cost, time, confidence and feasibility before anything runs."""
        body = {"template_name": template, "parameters": dict(parameters or {})}
        return cast(Estimate, self.request("POST", "/estimate", json=body))

    def submit(
        self,
        template: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        priority: Priority = "normal",
        request_id: str | None = None,
    ) -> Run:
        """Start a run (the same ``request_id`` gives the same run) and return its handle."""
        body = conn.execute_body(template, parameters, priority, request_id)
        answer = self.request("POST", "/execute", json=body)
        return Run(self, answer["execution_id"], status=answer["status"])

    def run(self, execution_id: str) -> Run:
        """The handle of a run submitted before (by anyone with this client's key)."""
        return Run(self, execution_id)

    def executions(
        self,
        *,
        status: str | None = None,
        template: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> ExecutionPage:
        """This key's executions, newest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        params.update({k: v for k, v in (("status", status), ("template", template)) if v})
        return cast(ExecutionPage, self.request("GET", "/executions", params=params))

    def stream(self, execution_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """One connection to the run's progress stream (``Run.events`` reconnects)."""
        timeout = httpx.Timeout(30.0, read=conn.STREAM_READ_TIMEOUT_S)
        headers = conn.stream_headers(last_event_id)
        with connect_sse(
            self.http, "GET", f"/progress/{execution_id}", headers=headers, timeout=timeout
        ) as source:
            if source.response.status_code >= 400:
                source.response.read()
                raise from_response(source.response)
            for sse in source.iter_sse():
                if sse.data:
                    yield Event(sse.id, json.loads(sse.data))


class Run:
    """One execution: follow it, wait for it, read it, fetch what it delivered, stop it."""

    def __init__(self, client: Client, execution_id: str, *, status: str | None = None) -> None:
        self.client = client
        self.execution_id = execution_id
        #: The status when this handle was made (``submit``'s answer); ``status()`` reads it now.
        self.submitted_status = status

    def __repr__(self) -> str:
        return f"Run({self.execution_id!r})"

    def events(self, last_event_id: str | None = None) -> Iterator[Event]:
        """Every event until the final one, across dropped connections: each reconnect sends
        ``Last-Event-ID``, so nothing is missed or repeated."""
        last, failures = last_event_id, 0
        while True:
            try:
                for event in self.client.stream(self.execution_id, last):
                    last, failures = event.id or last, 0
                    yield event
                    if event.final:
                        return
                problem: Exception = ConnectionFailed("the stream ended before the final event")
            except (httpx.TransportError, SSEError) as exc:
                problem = exc
            except ApiError as exc:
                if exc.status not in conn.RETRIABLE:
                    raise
                problem = exc
            failures += 1
            if failures > conn.MAX_RECONNECTS:
                lost = f"lost the progress stream of {self.execution_id}: {problem}"
                raise ConnectionFailed(lost)
            conn.log.info("progress stream of %s lost (%s); resuming", self.execution_id, problem)
            time.sleep(min(5.0, 0.2 * 2**failures))

    def wait(self, timeout: float | None = None) -> Execution:
        """Follow the run to its final event; return the execution as it ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for _event in self.events():
            if deadline is not None and time.monotonic() > deadline:
                raise RunTimeout(f"{self.execution_id} still running after {timeout} s")
        return self.status()

    def status(self) -> Execution:
        """Status, stages, cost, time and errors, now."""
        return cast(Execution, self.client.request("GET", f"/executions/{self.execution_id}"))

    def deliverables(self) -> list[Deliverable]:
        """The run's outputs for people, each with a time-limited download URL."""
        answer = self.client.request("GET", f"/executions/{self.execution_id}/deliverables")
        return cast(list[Deliverable], answer["deliverables"])

    def download(self, name: str, destination: str | Path = ".") -> Path:
        """Save deliverable ``name`` (into a directory, or as a file path); return the path."""
        item = find_deliverable(self.deliverables(), name, self.execution_id)
        target = Path(destination)
        target = target / item["name"] if target.is_dir() else target
        try:
            # The URL is presigned: the API key is not sent to object storage.
            with httpx.stream("GET", str(item["url"]), timeout=60) as response:
                if response.status_code >= 400:
                    response.read()
                    raise from_response(response)
                with target.open("wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
        except httpx.HTTPError as exc:
            raise conn.unreachable(str(item["url"]).split("?")[0], exc) from None
        return target

    def cancel(self) -> Execution:
        """Stop the run and release everything it holds."""
        path = f"/executions/{self.execution_id}/cancel"
        return cast(Execution, self.client.request("POST", path))

    def resume(self) -> Execution:
        """Rerun a failed, cancelled or stopped run from its last good checkpoints."""
        path = f"/executions/{self.execution_id}/resume"
        return cast(Execution, self.client.request("POST", path))


def find_deliverable(items: list[Deliverable], name: str, execution_id: str) -> Deliverable:
    for item in items:
        if item["name"] == name:
            if not item["url"]:
                raise NotFound(404, "expired", f"deliverable {name!r} has expired")
            return item
    names = ", ".join(i["name"] for i in items) or "none"
    missing = f"{execution_id} has no deliverable {name!r} (it has: {names})"
    raise NotFound(404, "not_found", missing)


class Templates:
    """``GET/PUT /templates``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self) -> Rows:
        return cast(Rows, self.client.request("GET", "/templates")["templates"])

    def get(self, name: str, version: int | None = None) -> TemplateView:
        params = {"version": version} if version is not None else None
        return cast(TemplateView, self.client.request("GET", f"/templates/{name}", params=params))

    def push(self, template: Any) -> dict[str, Any]:
        """Add a version (an admin key): a ``Template``, a definition dict or YAML text."""
        name, body = template_body(template)
        return cast(dict[str, Any], self.client.request("PUT", f"/templates/{name}", json=body))


def template_body(template: Any) -> tuple[str, dict[str, Any]]:
    """The name and ``PUT /templates/{name}`` body of a ``Template``, a dict or YAML text."""
    if isinstance(template, str):
        import yaml

        name = (yaml.safe_load(template) or {}).get("name", "")
        return str(name), {"yaml": template}
    definition = template if isinstance(template, dict) else template.model_dump(mode="json")
    return str(definition.get("name", "")), {"definition": definition}


class Workers:
    """``GET /workers`` (a monitor key)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self) -> Rows:
        return cast(Rows, self.client.request("GET", "/workers")["workers"])


class Resources:
    """``GET /resources`` (a monitor key): the live pool."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.client.request("GET", "/resources"))

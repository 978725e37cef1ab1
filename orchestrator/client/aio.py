"""``AsyncClient``: the twin of ``Client`` for asyncio (notebooks, web apps)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import httpx
from httpx_sse import SSEError, aconnect_sse

import orchestrator.client.connection as conn
from orchestrator.client.errors import ApiError, ConnectionFailed, RunTimeout, from_response
from orchestrator.client.models import (
    Deliverable,
    Estimate,
    Event,
    Execution,
    ExecutionPage,
    Priority,
    TemplateView,
)
from orchestrator.client.sync import Rows, find_deliverable, template_body


class AsyncClient:
    """``Client`` with ``await``: the same methods, errors, retries and configuration."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: conn.Retries | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url, key = conn.endpoint(url, key)
        self.retries = retries or conn.Retries()
        self.http = httpx.AsyncClient(
            transport=transport, **conn.http_options(self.url, key, timeout)
        )
        self.templates = AsyncTemplates(self)
        self.workers = AsyncWorkers(self)
        self.resources = AsyncResources(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call, its JSON answer; see ``Client.request``."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                response = await self.http.request(method, path, **kwargs)
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
            await asyncio.sleep(delay)
            attempt += 1

    async def estimate(
        self, template: str, parameters: Mapping[str, Any] | None = None
    ) -> Estimate:
        body = {"template_name": template, "parameters": dict(parameters or {})}
        return cast(Estimate, await self.request("POST", "/estimate", json=body))

    async def submit(
        self,
        template: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        priority: Priority = "normal",
        request_id: str | None = None,
    ) -> AsyncRun:
        body = conn.execute_body(template, parameters, priority, request_id)
        answer = await self.request("POST", "/execute", json=body)
        return AsyncRun(self, answer["execution_id"], status=answer["status"])

    def run(self, execution_id: str) -> AsyncRun:
        return AsyncRun(self, execution_id)

    async def executions(
        self,
        *,
        status: str | None = None,
        template: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> ExecutionPage:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        params.update({k: v for k, v in (("status", status), ("template", template)) if v})
        return cast(ExecutionPage, await self.request("GET", "/executions", params=params))

    async def stream(
        self, execution_id: str, last_event_id: str | None = None
    ) -> AsyncIterator[Event]:
        timeout = httpx.Timeout(30.0, read=conn.STREAM_READ_TIMEOUT_S)
        headers = conn.stream_headers(last_event_id)
        async with aconnect_sse(
            self.http, "GET", f"/progress/{execution_id}", headers=headers, timeout=timeout
        ) as source:
            if source.response.status_code >= 400:
                await source.response.aread()
                raise from_response(source.response)
            async for sse in source.aiter_sse():
                if sse.data:
                    yield Event(sse.id, json.loads(sse.data))


class AsyncRun:
    """``Run`` with ``await``."""

    def __init__(
        self, client: AsyncClient, execution_id: str, *, status: str | None = None
    ) -> None:
        self.client = client
        self.execution_id = execution_id
        self.submitted_status = status

    def __repr__(self) -> str:
        return f"AsyncRun({self.execution_id!r})"

    async def events(self, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """Every event until the final one, resuming with ``Last-Event-ID``."""
        last, failures = last_event_id, 0
        while True:
            try:
                async for event in self.client.stream(self.execution_id, last):
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
            await asyncio.sleep(min(5.0, 0.2 * 2**failures))

    async def wait(self, timeout: float | None = None) -> Execution:
        try:
            async with asyncio.timeout(timeout):
                async for _event in self.events():
                    pass
        except TimeoutError:
            raise RunTimeout(f"{self.execution_id} still running after {timeout} s") from None
        return await self.status()

    async def status(self) -> Execution:
        return cast(Execution, await self.client.request("GET", f"/executions/{self.execution_id}"))

    async def deliverables(self) -> list[Deliverable]:
        answer = await self.client.request("GET", f"/executions/{self.execution_id}/deliverables")
        return cast(list[Deliverable], answer["deliverables"])

    async def download(self, name: str, destination: str | Path = ".") -> Path:
        item = find_deliverable(await self.deliverables(), name, self.execution_id)
        target = Path(destination)
        target = target / item["name"] if target.is_dir() else target
        try:
            # The URL is presigned: the API key is not sent to object storage.
            async with (
                httpx.AsyncClient(timeout=60) as plain,
                plain.stream("GET", str(item["url"])) as response,
            ):
                if response.status_code >= 400:
                    await response.aread()
                    raise from_response(response)
                with target.open("wb") as file:
                    async for chunk in response.aiter_bytes():
                        file.write(chunk)
        except httpx.HTTPError as exc:
            raise conn.unreachable(str(item["url"]).split("?")[0], exc) from None
        return target

    async def cancel(self) -> Execution:
        path = f"/executions/{self.execution_id}/cancel"
        return cast(Execution, await self.client.request("POST", path))

    async def resume(self) -> Execution:
        path = f"/executions/{self.execution_id}/resume"
        return cast(Execution, await self.client.request("POST", path))


class AsyncTemplates:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def list(self) -> Rows:
        return cast(Rows, (await self.client.request("GET", "/templates"))["templates"])

    async def get(self, name: str, version: int | None = None) -> TemplateView:
        params = {"version": version} if version is not None else None
        answer = await self.client.request("GET", f"/templates/{name}", params=params)
        return cast(TemplateView, answer)

    async def push(self, template: Any) -> dict[str, Any]:
        name, body = template_body(template)
        answer = await self.client.request("PUT", f"/templates/{name}", json=body)
        return cast(dict[str, Any], answer)


class AsyncWorkers:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def list(self) -> Rows:
        return cast(Rows, (await self.client.request("GET", "/workers"))["workers"])


class AsyncResources:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def get(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self.client.request("GET", "/resources"))

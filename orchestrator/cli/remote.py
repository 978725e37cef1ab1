"""The CLI as an HTTP client of a running API (``--api URL --key KEY``).

Errors come back as the API's JSON error shape and leave as one ``ClickException`` line;
progress is the API's Server-Sent Events stream, resumed with ``Last-Event-ID`` when the
connection drops, so a follower never misses or repeats an event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import click
import httpx

#: Reconnects in a row without a new event before the follower gives up.
MAX_RECONNECTS = 10


class ApiClient:
    """A bearer-key session against one Orchestrator API."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30, read=60),
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; a 4xx/5xx becomes a one-line error with the API's code and message."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"API {self.http.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = f"{error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise click.ClickException(f"API {response.status_code} {message}")
        return response.json()

    def events(self, execution_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The run's events until the final one, across reconnects."""
        last_id: str | None = None
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.http.stream(
                    "GET", f"/progress/{execution_id}", headers=headers, timeout=None
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        self.call("GET", f"/executions/{execution_id}")  # raises the error
                    for event_id, event in parse_sse(response.iter_lines()):
                        last_id, failures = event_id, 0
                        yield event_id, event
                        if event.get("type") == "final":
                            return
            except httpx.HTTPError as exc:
                failures += 1
                if failures > MAX_RECONNECTS:
                    raise click.ClickException(f"lost the progress stream: {exc}") from None
                time.sleep(min(5.0, 0.5 * failures))


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(id, data)`` of each SSE event; comments and ``retry:`` lines are skipped."""
    event_id, data = "", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event_id, json.loads("\n".join(data))
            event_id, data = "", []
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())

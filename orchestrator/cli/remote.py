"""The CLI through ``orchestrator.client``: ``--api URL --key KEY`` (or ``ORCH_API_URL`` and
``ORCH_API_KEY``) makes a command talk to a running API instead of this process's services.

The client raises typed ``OrchestratorError``s, which the command group prints as one line;
the progress bars read the client's resumable event stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from orchestrator.client import Client, Run, RunTimeout

F = TypeVar("F", bound=Callable[..., Any])

api_options = [
    click.option(
        "--api",
        "api_url",
        envvar="ORCH_API_URL",
        default=None,
        help="an API to talk to (http://host:8000); default $ORCH_API_URL",
    ),
    click.option(
        "--key",
        "api_key",
        envvar="ORCH_API_KEY",
        default=None,
        help="the client API key for --api; default $ORCH_API_KEY",
    ),
]

json_option = click.option(
    "--json", "as_json", is_flag=True, help="print the API's JSON instead of tables"
)


def with_api_options(command: F) -> F:
    """``--api URL --key KEY``: act through a running API instead of this process's config."""
    for option in reversed(api_options):
        command = option(command)
    return command


def api_client(api_url: str | None, api_key: str | None) -> Client | None:
    """The client when an API is configured, else None (the command acts locally)."""
    if not api_url:
        return None
    if not api_key:
        raise click.BadParameter("--api needs --key (a client key)", param_hint="--key")
    return Client(api_url, api_key)


def event_pairs(run: Run, timeout: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """The run's events as ``(id, data)``, what the progress bars read, until ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for event in run.events():
        yield event.id, event.data
        if deadline is not None and time.monotonic() > deadline and not event.final:
            raise RunTimeout(f"{run.execution_id} still running after {timeout} s")


def echo_json(value: Any) -> None:
    """One JSON document on stdout: what the API answered, unchanged."""
    click.echo(json.dumps(value, indent=2, default=str))

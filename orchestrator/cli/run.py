"""``orchestrator run``: submit a template and follow it with progress bars."""

from __future__ import annotations

import json
from typing import Any, cast

import click
from rich.console import Console
from rich.table import Table

from orchestrator import template_registry
from orchestrator.cli.remote import (
    api_client,
    echo_json,
    event_pairs,
    json_option,
    with_api_options,
)
from orchestrator.client.models import Priority as ClientPriority
from orchestrator.constants import Priority
from orchestrator.settings import Settings


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``-p key=value``: values are JSON when they parse as JSON (numbers, true), else text."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="-p")
        try:
            parameters[key] = json.loads(value)
        except json.JSONDecodeError:
            parameters[key] = value
    return parameters


def print_summary(
    console: Console, execution: dict[str, Any], deliverables: list[dict[str, Any]]
) -> None:
    """Stages, cost, time and deliverables of a run, from the API's JSON shape."""
    table = Table(
        title=f"{execution['template_name']} {execution['execution_id']}: {execution['status']}"
    )
    for column in ("stage", "worker.action", "status", "time", "cost", "items"):
        table.add_column(column)
    for stage in execution.get("stages", []):
        summary = stage.get("summary") or {}
        table.add_row(
            stage["stage"],
            f"{stage['worker']}.{stage['action']}",
            stage["status"],
            f"{stage.get('time_ms') or 0} ms",
            f"${stage.get('cost_usd') or 0:.6f}",
            str(summary.get("items_processed", "")),
        )
    console.print(table)
    console.print(
        f"cost ${execution.get('total_cost_usd') or 0:.6f} (estimated "
        f"${execution.get('estimated_cost_usd') or 0:.6f}), "
        f"time {execution.get('total_time_ms') or 0} ms "
        f"(estimated {execution.get('estimated_time_ms') or 0} ms)"
    )
    if execution.get("error"):
        console.print(f"[red]error:[/red] {execution['error']}")
    for item in deliverables:
        console.print(
            f"deliverable [bold]{item['name']}[/bold] ({item['size_bytes']} bytes): "
            f"{item['url'] or '(expired)'}",
            soft_wrap=True,  # a URL must stay copyable: never folded
        )


def print_local_summary(console: Console, runtime: Any, execution_id: str) -> None:
    """``print_summary`` of a run read from this process's database and storage."""
    from orchestrator.engine.execution_view import deliverables, describe

    print_summary(console, describe(runtime, execution_id), deliverables(runtime, execution_id))


@click.command()
@click.argument("template")
@click.option("-p", "--param", "params", multiple=True, help="key=value (repeatable)")
@click.option("--priority", type=click.Choice([p.value for p in Priority]), default="normal")
@click.option("--request-id", default=None, help="idempotency key: the same id, the same run")
@click.option(
    "--timeout",
    default=3600.0,
    type=click.FloatRange(min=0, min_open=True),
    help="seconds to follow before giving up",
)
@json_option
@with_api_options
@click.pass_obj
def run(
    settings: Settings,
    template: str,
    params: tuple[str, ...],
    priority: str,
    request_id: str | None,
    timeout: float,
    as_json: bool,
    api_url: str | None,
    api_key: str | None,
) -> None:
    """Submit TEMPLATE with -p key=value parameters and follow it to the end (--json: the
    bars on stderr, then the execution as GET /executions/{id} shows it)."""
    from orchestrator.cli.progress_view import follow_with_bars

    console = Console(stderr=True) if as_json else Console()
    parameters = parse_params(params)
    client = api_client(api_url, api_key)
    if client is not None:
        submitted = client.submit(
            template, parameters, priority=cast(ClientPriority, priority), request_id=request_id
        )
        console.print(f"submitted: {submitted.execution_id}")
        follow_with_bars(event_pairs(submitted, timeout), console)
        execution: dict[str, Any] = dict(submitted.status())
        if not as_json:
            print_summary(console, execution, [dict(d) for d in submitted.deliverables()])
    else:
        execution = run_locally(
            settings, console, template, parameters, priority, request_id, timeout, as_json
        )
    if as_json:
        echo_json(execution)
    if execution.get("status") not in {"completed", "stopped"}:
        raise SystemExit(1)


def warn_unserved(
    console: Console, runtime: Any, template: str, parameters: dict[str, Any]
) -> None:
    """Say so when no worker consumes a queue the run needs: it would wait in silence."""
    from orchestrator.constants import COORDINATOR_QUEUE
    from orchestrator.ops.supervisor import unserved_queues
    from orchestrator.template_registry import prepare

    _template, stages = prepare(runtime, template, parameters)
    missing = unserved_queues(runtime.celery, {COORDINATOR_QUEUE, *(s.worker for s in stages)})
    if missing:
        console.print(
            f"[yellow]no worker serves {', '.join(missing)}: the run waits until one does "
            f"(`orchestrator workers`, or `orchestrator worker --type {missing[0]}`)[/yellow]"
        )


def run_locally(
    settings: Settings,
    console: Console,
    template: str,
    parameters: dict[str, Any],
    priority: str,
    request_id: str | None,
    timeout: float,
    as_json: bool = False,
) -> dict[str, Any]:
    """Submit through this process's configuration and follow the run's Redis stream;
    returns the execution as the API shows it."""
    from orchestrator.cli.progress_view import follow_with_bars
    from orchestrator.engine import coordinator, events
    from orchestrator.engine.execution_view import describe
    from orchestrator.ops.health import require
    from orchestrator.runtime import Runtime

    require(settings, ("redis", "database"))
    runtime = Runtime(settings)
    template_registry.sync_templates(runtime)
    execution, created = coordinator.submit(
        runtime,
        template,
        parameters,
        request_id=request_id,
        priority=Priority(priority),
        client_id="cli",
    )
    console.print(f"{'submitted' if created else 'already submitted'}: {execution.execution_id}")
    warn_unserved(console, runtime, template, parameters)
    try:
        follow_with_bars(
            events.follow(runtime.redis, execution.execution_id, timeout_s=timeout), console
        )
    except TimeoutError:
        message = f"{execution.execution_id} still running after {timeout} s"
        raise click.ClickException(message) from None
    if not as_json:
        print_local_summary(console, runtime, execution.execution_id)
    return describe(runtime, execution.execution_id)


COMMANDS = [run]

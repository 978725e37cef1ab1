"""``orchestrator run``: submit a template and follow it with progress bars."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

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


def print_summary(console: Console, runtime: Any, execution_id: str) -> None:
    """Stages, cost, time and deliverables of a finished run."""
    from sqlalchemy import select

    from orchestrator.coordinator import load
    from orchestrator.db import Deliverable, StageExecution

    execution = load(runtime, execution_id)
    table = Table(title=f"{execution.template_name} {execution_id}: {execution.status}")
    for column in ("stage", "worker.action", "status", "time", "cost", "items"):
        table.add_column(column)
    with runtime.db.session() as session:
        stages = session.scalars(
            select(StageExecution)
            .where(StageExecution.execution_id == execution_id)
            .order_by(StageExecution.stage_order)
        ).all()
        deliverables = session.scalars(
            select(Deliverable).where(Deliverable.execution_id == execution_id)
        ).all()
    for stage in stages:
        summary = stage.summary_data or {}
        table.add_row(
            stage.stage_name,
            f"{stage.worker_name}.{stage.action}",
            stage.status,
            f"{stage.time_ms or 0} ms",
            f"${stage.cost_usd or 0:.6f}",
            str(summary.get("items_processed", "")),
        )
    console.print(table)
    console.print(
        f"cost ${execution.total_cost_usd or 0:.6f} (estimated "
        f"${execution.estimated_cost_usd or 0:.6f}), time {execution.total_time_ms or 0} "
        f"ms (estimated {execution.estimated_time_ms or 0} ms)"
    )
    if execution.error:
        console.print(f"[red]error:[/red] {execution.error}")
    for item in deliverables:
        console.print(
            f"deliverable [bold]{item.name}[/bold] ({item.size_bytes} bytes): "
            f"{runtime.store.presigned_url(item.storage_key)}",
            soft_wrap=True,  # a URL must stay copyable: never folded
        )


@click.command()
@click.argument("template")
@click.option("-p", "--param", "params", multiple=True, help="key=value (repeatable)")
@click.option("--priority", type=click.Choice([p.value for p in Priority]), default="normal")
@click.option("--request-id", default=None, help="idempotency key: the same id, the same run")
@click.option("--timeout", default=3600.0, help="seconds to follow before giving up")
@click.pass_obj
def run(
    settings: Settings,
    template: str,
    params: tuple[str, ...],
    priority: str,
    request_id: str | None,
    timeout: float,
) -> None:
    """Submit TEMPLATE with -p key=value parameters and follow it to the end."""
    from orchestrator import coordinator, events
    from orchestrator.cli.progress_view import follow_with_bars
    from orchestrator.health import require
    from orchestrator.runtime import Runtime

    require(settings, ("redis", "database"))
    runtime = Runtime(settings)
    coordinator.sync_templates(runtime)
    console = Console()
    execution, created = coordinator.submit(
        runtime,
        template,
        parse_params(params),
        request_id=request_id,
        priority=Priority(priority),
        client_id="cli",
    )
    console.print(f"{'submitted' if created else 'already submitted'}: {execution.execution_id}")
    try:
        final = follow_with_bars(
            events.follow(runtime.redis, execution.execution_id, timeout_s=timeout), console
        )
    except TimeoutError:
        message = f"{execution.execution_id} still running after {timeout} s"
        raise click.ClickException(message) from None
    print_summary(console, runtime, execution.execution_id)
    if final.get("status") not in {"completed", "stopped"}:
        raise SystemExit(1)


COMMANDS = [run]

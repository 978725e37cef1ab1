"""``orchestrator estimate | status | cancel | resume``: the API's verbs, from a shell.

They call the same library functions as the API's views, on the settings of this process.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from orchestrator.cli.run import parse_params, print_summary
from orchestrator.settings import Settings


def _runtime(settings: Settings) -> Any:
    from orchestrator.health import require
    from orchestrator.runtime import Runtime

    require(settings, ("redis", "database"))
    return Runtime(settings)


def print_estimate(console: Console, template: str, result: dict[str, Any]) -> None:
    """The estimate as a table of stages, then totals and reasons."""
    table = Table(title=f"estimate of {template}")
    for column in ("stage", "worker.action", "time", "cost", "source"):
        table.add_column(column)
    for row in result["breakdown"]:
        table.add_row(
            row["stage"],
            f"{row['worker']}.{row['action']}",
            f"{row['time_ms']} ms",
            f"${row['cost_usd']:.6f}",
            row["source"],
        )
    console.print(table)
    feasible = "[green]feasible[/green]" if result["feasible"] else "[red]not feasible[/red]"
    console.print(
        f"{feasible}: ${result['estimated_cost_usd']:.6f}, "
        f"~{result['estimated_time_ms'] / 1000:.1f} s, confidence {result['confidence']:.2f}"
    )
    for reason in result["reasons"]:
        console.print(f"  [yellow]{reason}[/yellow]")


@click.command()
@click.argument("template")
@click.option("-p", "--param", "params", multiple=True, help="key=value (repeatable)")
@click.pass_obj
def estimate(settings: Settings, template: str, params: tuple[str, ...]) -> None:
    """Cost, time, confidence and feasibility of TEMPLATE before it runs."""
    from orchestrator import coordinator
    from orchestrator.estimates import estimate_run

    runtime = _runtime(settings)
    coordinator.sync_templates(runtime)
    print_estimate(Console(), template, estimate_run(runtime, template, parse_params(params)))


@click.command()
@click.argument("execution_id", required=False)
@click.option("--limit", default=20, show_default=True, help="how many recent executions")
@click.pass_obj
def status(settings: Settings, execution_id: str | None, limit: int) -> None:
    """One execution's stages, cost and deliverables; without an id, the recent executions."""
    from sqlalchemy import select

    from orchestrator.db import PipelineExecution

    runtime = _runtime(settings)
    console = Console()
    if execution_id:
        print_summary(console, runtime, execution_id)
        return
    with runtime.db.session() as session:
        rows = session.scalars(
            select(PipelineExecution).order_by(PipelineExecution.created_at.desc()).limit(limit)
        ).all()
    table = Table(title="recent executions")
    for column in ("execution", "template", "status", "created", "cost", "time"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.execution_id,
            f"{row.template_name} v{row.template_version}",
            row.status,
            row.created_at.strftime("%Y-%m-%d %H:%M:%S") if row.created_at else "",
            f"${row.total_cost_usd or 0:.6f}",
            f"{row.total_time_ms or 0} ms",
        )
    console.print(table)


@click.command()
@click.argument("execution_id")
@click.pass_obj
def cancel(settings: Settings, execution_id: str) -> None:
    """Cancel a run: revoke what runs, release every reservation."""
    from orchestrator import coordinator

    click.echo(f"{execution_id}: {coordinator.cancel(_runtime(settings), execution_id)}")


@click.command()
@click.argument("execution_id")
@click.option("-p", "--param", "params", multiple=True, help="changed parameter key=value")
@click.pass_obj
def resume(settings: Settings, execution_id: str, params: tuple[str, ...]) -> None:
    """Rerun a failed, cancelled or stopped run from its last good checkpoints."""
    from orchestrator.recovery import resume as resume_execution

    rerun = resume_execution(_runtime(settings), execution_id, parameters=parse_params(params))
    click.echo(f"{execution_id}: resumed; rerunning {', '.join(rerun) or 'nothing'}")


COMMANDS = [estimate, status, cancel, resume]

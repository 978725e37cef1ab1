"""``orchestrator estimate | status | cancel | resume``: the API's verbs, from a shell.

Locally they call the same library functions as the API's views, on the settings of this
process; with ``--api URL --key KEY`` they call the API itself.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from orchestrator import template_registry
from orchestrator.cli.run import api_client, parse_params, print_summary, with_api_options
from orchestrator.settings import Settings


def _runtime(settings: Settings) -> Any:
    from orchestrator.ops.health import require
    from orchestrator.runtime import Runtime

    require(settings, ("redis", "database"))
    return Runtime(settings)


def print_estimate(console: Console, template: str, result: dict[str, Any]) -> None:
    """The estimate as a table of stages, then totals and reasons."""
    table = Table(title=f"estimate of {template}")
    for column in ("stage", "worker.action", "time p50 (p10-p90)", "cost", "method", "source"):
        table.add_column(column)
    for row in result["breakdown"]:
        span = row.get("time") or {}
        table.add_row(
            row["stage"],
            f"{row['worker']}.{row['action']}",
            f"{row['time_ms']} ms ({span.get('p10', 0):.0f}-{span.get('p90', 0):.0f})",
            f"${row['cost_usd']:.6f}",
            row.get("method") or "",
            row["source"],
        )
    console.print(table)
    feasible = "[green]feasible[/green]" if result["feasible"] else "[red]not feasible[/red]"
    time_ms = result.get("time_ms") or {}
    interval = (
        f" (80%: {time_ms['p10'] / 1000:.1f}-{time_ms['p90'] / 1000:.1f} s)" if time_ms else ""
    )
    runs = result.get("confidence_runs")
    basis = f" over {runs} runs" if runs else " (nominal: no finished run yet)"
    console.print(
        f"{feasible}: ${result['estimated_cost_usd']:.6f}, "
        f"~{result['estimated_time_ms'] / 1000:.1f} s{interval}, "
        f"confidence {result['confidence']:.2f}{basis}"
    )
    for reason in result["reasons"]:
        console.print(f"  [yellow]{reason}[/yellow]")


@click.command()
@click.argument("template")
@click.option("-p", "--param", "params", multiple=True, help="key=value (repeatable)")
@with_api_options
@click.pass_obj
def estimate(
    settings: Settings,
    template: str,
    params: tuple[str, ...],
    api_url: str | None,
    api_key: str | None,
) -> None:
    """Cost, time, confidence and feasibility of TEMPLATE before it runs."""
    parameters = parse_params(params)
    client = api_client(api_url, api_key)
    if client is not None:
        body = {"template_name": template, "parameters": parameters}
        result = client.call("POST", "/estimate", json=body)
    else:
        from orchestrator.engine.estimates import estimate_run

        runtime = _runtime(settings)
        template_registry.sync_templates(runtime)
        result = estimate_run(runtime, template, parameters)
    print_estimate(Console(), template, result)


@click.command()
@click.argument("execution_id", required=False)
@click.option("--limit", default=20, show_default=True, help="how many recent executions")
@with_api_options
@click.pass_obj
def status(
    settings: Settings,
    execution_id: str | None,
    limit: int,
    api_url: str | None,
    api_key: str | None,
) -> None:
    """One execution's stages, cost and deliverables; without an id, the recent executions."""
    console = Console()
    client = api_client(api_url, api_key)
    if client is not None:
        if execution_id:
            print_summary(
                console,
                client.call("GET", f"/executions/{execution_id}"),
                client.call("GET", f"/executions/{execution_id}/deliverables")["deliverables"],
            )
            return
        items = client.call("GET", "/executions", params={"limit": limit})["items"]
    else:
        from orchestrator.cli.run import print_local_summary
        from orchestrator.engine.execution_view import serialize

        runtime = _runtime(settings)
        if execution_id:
            print_local_summary(console, runtime, execution_id)
            return
        from sqlalchemy import select

        from orchestrator.db import PipelineExecution

        with runtime.db.session() as session:
            rows = session.scalars(
                select(PipelineExecution).order_by(PipelineExecution.created_at.desc()).limit(limit)
            ).all()
            items = [serialize(row) for row in rows]
    table = Table(title="recent executions")
    for column in ("execution", "template", "status", "created", "cost", "time"):
        table.add_column(column)
    for item in items:
        table.add_row(
            item["execution_id"],
            f"{item['template_name']} v{item['template_version']}",
            item["status"],
            (item["created_at"] or "")[:19].replace("T", " "),
            f"${item['total_cost_usd'] or 0:.6f}",
            f"{item['total_time_ms'] or 0} ms",
        )
    console.print(table)


@click.command()
@click.argument("execution_id")
@with_api_options
@click.pass_obj
def cancel(settings: Settings, execution_id: str, api_url: str | None, api_key: str | None) -> None:
    """Cancel a run: revoke what runs, release every reservation."""
    client = api_client(api_url, api_key)
    if client is not None:
        result = client.call("POST", f"/executions/{execution_id}/cancel")["status"]
    else:
        from orchestrator.engine import coordinator

        result = coordinator.cancel(_runtime(settings), execution_id)
    click.echo(f"{execution_id}: {result}")


@click.command()
@click.argument("execution_id")
@click.option("-p", "--param", "params", multiple=True, help="changed parameter key=value")
@with_api_options
@click.pass_obj
def resume(
    settings: Settings,
    execution_id: str,
    params: tuple[str, ...],
    api_url: str | None,
    api_key: str | None,
) -> None:
    """Rerun a failed, cancelled or stopped run from its last good checkpoints."""
    client = api_client(api_url, api_key)
    if client is not None:
        if params:
            raise click.BadParameter("changed parameters need a local resume", param_hint="-p")
        client.call("POST", f"/executions/{execution_id}/resume")
        click.echo(f"{execution_id}: resumed")
        return
    from orchestrator.engine.recovery import resume as resume_execution

    rerun = resume_execution(_runtime(settings), execution_id, parameters=parse_params(params))
    click.echo(f"{execution_id}: resumed; rerunning {', '.join(rerun) or 'nothing'}")


@click.group()
def estimates() -> None:
    """How good the estimates were, and the models behind them."""


@estimates.command()
@click.option("--template", help="only runs of this template")
@click.option("--last", default=100, show_default=True, help="how many recent runs")
@click.option("--json", "as_json", is_flag=True, help="the figures as JSON")
@click.pass_obj
def accuracy(settings: Settings, template: str | None, last: int, as_json: bool) -> None:
    """Time and cost error, interval coverage and share within the p90, per template and
    stage (what GET /estimates/accuracy serves)."""
    import json

    from orchestrator.engine.estimates import accuracy as measure

    figures = measure(_runtime(settings), template=template, last=max(1, last))
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    console = Console()
    table = Table(title=f"estimate accuracy, last {last} completed runs")
    columns = (
        "runs",
        "time_median_abs_pct_error",
        "cost_median_abs_pct_error",
        "interval_coverage",
        "within_p90",
    )
    table.add_column("template")
    for column in ("runs", "time error %", "cost error %", "in interval", "within p90"):
        table.add_column(column, justify="right")
    rows = {"all": figures, **figures["templates"]}
    for name, row in rows.items():
        table.add_row(name, *("-" if row[c] is None else str(row[c]) for c in columns))
    console.print(table)


@estimates.command()
@click.pass_obj
def refit(settings: Settings) -> None:
    """Fit the estimator on the history now (beat does it every 30 s)."""
    from orchestrator.engine.estimates import refit as fit

    fitted = fit(_runtime(settings))
    click.echo(f"fitted {len(fitted.actions)} worker actions on the recent history")


COMMANDS = [estimate, status, cancel, resume, estimates]

"""``orchestrator estimate | status | deliverables | cancel | resume``: the API's verbs.

Locally they call the same library functions as the API's views, on the settings of this
process; with ``--api URL --key KEY`` (or ``ORCH_API_URL``) they go through
``orchestrator.client``. ``--json`` prints what the API answers, the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from orchestrator import template_registry
from orchestrator.cli.remote import F, api_client, echo_json, json_option, with_api_options
from orchestrator.cli.run import parse_params, print_summary
from orchestrator.client import Client
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
@json_option
@with_api_options
@click.pass_obj
def estimate(
    settings: Settings,
    template: str,
    params: tuple[str, ...],
    as_json: bool,
    api_url: str | None,
    api_key: str | None,
) -> None:
    """Cost, time, confidence and feasibility of TEMPLATE before it runs."""
    parameters = parse_params(params)
    client = api_client(api_url, api_key)
    if client is not None:
        result: dict[str, Any] = dict(client.estimate(template, parameters))
    else:
        from orchestrator.engine.estimates import estimate_run

        runtime = _runtime(settings)
        template_registry.sync_templates(runtime)
        result = estimate_run(runtime, template, parameters)
    if as_json:
        echo_json(result)
    else:
        print_estimate(Console(), template, result)


def _recent(settings: Settings, limit: int) -> list[dict[str, Any]]:
    """The newest executions from this process's database, as the API lists them."""
    from sqlalchemy import select

    from orchestrator.db import PipelineExecution
    from orchestrator.engine.execution_view import serialize

    runtime = _runtime(settings)
    with runtime.db.session() as session:
        rows = session.scalars(
            select(PipelineExecution).order_by(PipelineExecution.created_at.desc()).limit(limit)
        ).all()
        return [serialize(row) for row in rows]


def _one(settings: Settings, client: Client | None, execution_id: str) -> tuple[Any, Any]:
    """An execution and its deliverables, through the API or locally."""
    if client is not None:
        run = client.run(execution_id)
        return run.status(), run.deliverables()
    from orchestrator.engine.execution_view import deliverables, describe

    runtime = _runtime(settings)
    return describe(runtime, execution_id), deliverables(runtime, execution_id)


def print_executions(items: list[dict[str, Any]]) -> None:
    """The recent executions; an execution id is never cut, whatever the terminal's width."""
    table = Table(title="recent executions")
    widest = max((len(item["execution_id"]) for item in items), default=10)
    table.add_column("execution", no_wrap=True, min_width=widest)
    for column in ("template", "status", "created", "cost", "time"):
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
    Console().print(table)


def _how_many(option: str, default: int, most: int, what: str) -> Callable[[F], F]:
    """A count option: 1 to ``most`` (what the API allows), refused by name otherwise."""
    return click.option(
        option, default=default, show_default=True, type=click.IntRange(1, most), help=what
    )


@click.command()
@click.argument("execution_id", required=False)
@_how_many("--limit", 20, 500, "how many recent executions")
@json_option
@with_api_options
@click.pass_obj
def status(
    settings: Settings,
    execution_id: str | None,
    limit: int,
    as_json: bool,
    api_url: str | None,
    api_key: str | None,
) -> None:
    """One execution's stages, cost and deliverables; without an id, the recent executions."""
    client = api_client(api_url, api_key)
    if execution_id:
        execution, items = _one(settings, client, execution_id)
        if as_json:
            echo_json(execution)
        else:
            print_summary(Console(), execution, items)
        return
    if client is not None:
        recent = [dict(item) for item in client.executions(limit=limit)["items"]]
    else:
        recent = _recent(settings, limit)
    if as_json:
        echo_json({"items": recent})
    else:
        print_executions(recent)


@click.command()
@click.argument("execution_id")
@json_option
@with_api_options
@click.pass_obj
def deliverables(
    settings: Settings, execution_id: str, as_json: bool, api_url: str | None, api_key: str | None
) -> None:
    """A run's deliverables with their time-limited download URLs (never folded)."""
    _execution, items = _one(settings, api_client(api_url, api_key), execution_id)
    if as_json:
        echo_json({"execution_id": execution_id, "deliverables": items})
        return
    for item in items:
        click.echo(f"{item['name']}\t{item['size_bytes']} bytes\t{item['url'] or '(expired)'}")


@click.command()
@click.argument("execution_id")
@json_option
@with_api_options
@click.pass_obj
def cancel(
    settings: Settings, execution_id: str, as_json: bool, api_url: str | None, api_key: str | None
) -> None:
    """Cancel a run: revoke what runs, release every reservation."""
    client = api_client(api_url, api_key)
    if client is not None:
        execution: dict[str, Any] = dict(client.run(execution_id).cancel())
    else:
        from orchestrator.engine import coordinator
        from orchestrator.engine.execution_view import describe

        runtime = _runtime(settings)
        coordinator.cancel(runtime, execution_id)
        execution = describe(runtime, execution_id)
    if as_json:
        echo_json(execution)
    else:
        click.echo(f"{execution_id}: {execution['status']}")


@click.command()
@click.argument("execution_id")
@click.option("-p", "--param", "params", multiple=True, help="changed parameter key=value")
@json_option
@with_api_options
@click.pass_obj
def resume(
    settings: Settings,
    execution_id: str,
    params: tuple[str, ...],
    as_json: bool,
    api_url: str | None,
    api_key: str | None,
) -> None:
    """Rerun a failed, cancelled or stopped run from its last good checkpoints."""
    client = api_client(api_url, api_key)
    if client is not None:
        if params:
            raise click.BadParameter("changed parameters need a local resume", param_hint="-p")
        execution: dict[str, Any] = dict(client.run(execution_id).resume())
        rerun = None
    else:
        from orchestrator.engine import coordinator
        from orchestrator.engine.execution_view import serialize
        from orchestrator.engine.recovery import resume as resume_execution

        runtime = _runtime(settings)
        rerun = resume_execution(runtime, execution_id, parameters=parse_params(params))
        execution = serialize(coordinator.load(runtime, execution_id))
    if as_json:
        echo_json(execution)
    elif rerun is None:
        click.echo(f"{execution_id}: resumed")
    else:
        click.echo(f"{execution_id}: resumed; rerunning {', '.join(rerun) or 'nothing'}")


@click.group()
def estimates() -> None:
    """How good the estimates were, and the models behind them."""


@estimates.command()
@click.option("--template", help="only runs of this template")
@_how_many("--last", 100, 10_000, "how many recent runs")
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


COMMANDS = [estimate, status, deliverables, cancel, resume, estimates]

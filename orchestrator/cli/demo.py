"""``orchestrator demo``: the first command a newcomer runs (``make demo``).

Starts what is missing (the embedded object store, the coordinator and one worker process per
worker type; SQLite needs nothing), estimates and runs ``market_research_pipeline`` with
progress bars, saves the report under the data directory, and stops what it started.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from orchestrator import template_registry
from orchestrator.constants import Priority
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.runtime import Runtime

DEMO_TEMPLATE = "market_research_pipeline"


def save_deliverables(runtime: Runtime, execution_id: str, directory: Path) -> list[Path]:
    """Download the run's deliverables (checksums verified) into ``directory``."""
    from sqlalchemy import select

    from orchestrator.db import Deliverable

    with runtime.db.session() as session:
        rows = session.scalars(
            select(Deliverable).where(Deliverable.execution_id == execution_id)
        ).all()
    directory.mkdir(parents=True, exist_ok=True)
    saved = []
    for row in rows:
        path = directory / Path(row.name).name
        path.write_bytes(runtime.store.get_bytes(row.storage_key, checksum=row.checksum))
        saved.append(path)
    return saved


@click.command()
@click.option("--topic", default="electric vehicles", show_default=True)
@click.option(
    "--depth",
    type=click.Choice(["quick", "standard", "comprehensive"]),
    default="standard",
    show_default=True,
)
@click.pass_obj
def demo(settings: Settings, topic: str, depth: str) -> None:
    """Run market_research_pipeline end to end on this machine and show where the report is."""
    from orchestrator.cli.executions import print_estimate
    from orchestrator.cli.progress_view import follow_with_bars
    from orchestrator.cli.run import print_local_summary
    from orchestrator.engine import coordinator, events
    from orchestrator.engine.estimates import estimate_run
    from orchestrator.ops.health import require
    from orchestrator.ops.migrations import upgrade
    from orchestrator.ops.supervisor import deployed_queues, start_fleet
    from orchestrator.runtime import Runtime
    from orchestrator.storage.embedded import ensure_running

    console = Console()
    require(settings, ("redis",))  # the one thing the demo cannot start: says how to get it
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = ensure_running(settings)
    fleet = None
    try:
        require(settings, ("database", "object_storage"))
        upgrade(settings)
        runtime = Runtime(settings)
        template_registry.sync_templates(runtime)
        with console.status("starting the coordinator and one worker per worker type"):
            fleet = start_fleet(settings, runtime.celery, queues=deployed_queues(runtime.registry))
        console.print(f"workers up: {', '.join(fleet.processes)} (logs in {fleet.log_dir})")
        parameters = {"topic": topic, "depth": depth}
        estimate = estimate_run(runtime, DEMO_TEMPLATE, parameters)
        print_estimate(console, DEMO_TEMPLATE, estimate)
        execution, _ = coordinator.submit(
            runtime,
            DEMO_TEMPLATE,
            parameters,
            client_id="demo",
            priority=Priority.HIGH,
        )
        console.print(f"running {execution.execution_id}")
        final = follow_with_bars(
            events.follow(runtime.redis, execution.execution_id, timeout_s=600), console
        )
        print_local_summary(console, runtime, execution.execution_id)
        saved = save_deliverables(
            runtime, execution.execution_id, settings.data_dir / "reports" / execution.execution_id
        )
        for path in saved:
            console.print(f"report saved: {path.resolve()}", soft_wrap=True, highlight=False)
        if final.get("status") != "completed":
            raise SystemExit(1)
    finally:
        if fleet is not None:
            fleet.stop()
        store.stop()


COMMANDS = [demo]

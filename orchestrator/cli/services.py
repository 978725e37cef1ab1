"""Commands that start the product's processes: migrate, worker, beat."""

from __future__ import annotations

from typing import Any

import click

from orchestrator.settings import Settings


@click.command()
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Bring the database schema to the newest version (alembic upgrade head)."""
    from orchestrator.ops.health import require
    from orchestrator.ops.migrations import upgrade

    require(settings, ("database",))
    upgrade(settings)
    click.echo(f"database at head: {settings.describe()['database_url']}")


@click.command()
@click.option("--type", "worker_type", required=True, help="worker type, or 'coordinator'")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=None)
@click.option("--loglevel", "-l", default="INFO")
@click.pass_obj
def worker(settings: Settings, worker_type: str, concurrency: int | None, loglevel: str) -> None:
    """Run one Celery worker process serving the queue of WORKER TYPE."""
    from orchestrator.celery_app import create_celery_app
    from orchestrator.ops.health import require

    require(settings, ("redis", "broker"))
    app = create_celery_app(settings)
    queues = {q.name for q in app.conf.task_queues}
    if worker_type not in queues:
        raise click.BadParameter(
            f"unknown worker type {worker_type!r}; known: {', '.join(sorted(queues))}",
            param_hint="--type",
        )
    argv = ["worker", "-Q", worker_type, "-n", f"{worker_type}@%h", "-l", loglevel]
    if concurrency:
        argv += ["-c", str(concurrency)]
    app.worker_main(argv)


@click.command()
@click.option("--loglevel", "-l", default="INFO")
@click.option("--check", is_flag=True, help="exit 1 unless a running beat ticked lately")
@click.pass_obj
def beat(settings: Settings, loglevel: str, check: bool) -> None:
    """Run Celery beat with the schedule of beat_schedule.py."""
    from orchestrator.ops.beat_health import MAX_AGE_S, SCHEDULE_FILE, SCHEDULER, heartbeat_age

    schedule = settings.data_dir / SCHEDULE_FILE
    if check:  # the healthcheck of compose's beat service
        age = heartbeat_age(schedule)
        if age is None or age > MAX_AGE_S:
            last = "never" if age is None else f"{age:.0f} s ago"
            raise click.ClickException(f"beat is not ticking (last tick: {last})")
        click.echo(f"beat ticked {age:.0f} s ago")
        return
    from orchestrator.celery_app import create_celery_app
    from orchestrator.ops.health import require

    require(settings, ("redis", "broker"))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_celery_app(settings)
    app.Beat(loglevel=loglevel, schedule=str(schedule), scheduler=SCHEDULER).run()


@click.command()
@click.option(
    "--concurrency", "-c", type=click.IntRange(min=1), default=1, help="processes per worker type"
)
@click.option(
    "--beat/--no-beat",
    default=True,
    help="run the beat schedule (reconciler, worker health) in the coordinator's process; "
    "--no-beat when `orchestrator beat` runs elsewhere",
)
@click.option(
    "--autoscale",
    is_flag=True,
    help="resize each worker type's pool to GET /scaling's desired workers (pool_grow / "
    "pool_shrink), within resources.yaml's min_workers / max_workers",
)
@click.pass_obj
def workers(settings: Settings, concurrency: int, beat: bool, autoscale: bool) -> None:
    """Run the coordinator and one worker process per worker type until Ctrl-C."""
    import signal
    import time

    from orchestrator.celery_app import create_celery_app
    from orchestrator.ops.health import require
    from orchestrator.ops.supervisor import (
        Restarter,
        deployed_queues,
        start_fleet,
        start_worker,
    )
    from orchestrator.sdk import load_worker_modules
    from orchestrator.storage.embedded import ensure_running

    require(settings, ("redis", "broker"))
    store = ensure_running(settings)  # the zero-setup object store, when none is configured
    app = create_celery_app(settings)
    # Every type the configured modules register: one asked for is one that runs must reach.
    queues = deployed_queues(load_worker_modules(settings.worker_modules), internal=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fleet = start_fleet(settings, app, queues=queues, concurrency=concurrency, beat=beat)
    click.echo(f"workers up: {', '.join(fleet.processes)} (logs in {fleet.log_dir}); Ctrl-C stops")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C

    def restart(queue: str) -> None:
        coordinating = queue == "coordinator"
        concurrent = 2 if coordinating else concurrency
        start_worker(fleet, settings, queue, concurrency=concurrent, beat=beat and coordinating)
        if sizer is not None:
            sizer.forget(queue, concurrent)

    # A worker that dies comes back, as compose's restart policy would do; one that keeps
    # crashing comes back after 1, 2, 4 ... 60 s (CrashBackoff), not every second forever.
    restarter = Restarter(
        fleet, restart, started_at=dict.fromkeys(fleet.processes, time.monotonic())
    )
    sizer = _pool_sizer(settings, app, fleet, concurrency) if autoscale else None
    try:
        while True:
            time.sleep(1)
            for line in restarter.step(time.monotonic()):
                click.secho(line, fg="yellow", err=True)
            for line in sizer.tick() if sizer is not None and sizer.due() else []:
                click.echo(line)
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
        store.stop()


def _pool_sizer(settings: Settings, app: Any, fleet: Any, concurrency: int) -> Any:
    """The autoscaler of ``workers --autoscale``: every worker type but the coordinator."""
    from orchestrator.engine import scaling
    from orchestrator.ops.autoscaler import PoolSizer
    from orchestrator.runtime import Runtime

    runtime = Runtime(settings, app)
    named = zip(fleet.processes, fleet.node_names(), strict=True)
    nodes = {queue: node for queue, node in named if queue != "coordinator"}
    return PoolSizer(
        app,
        lambda: scaling.report(runtime, fresh=True)["worker_types"],
        nodes,
        dict.fromkeys(nodes, concurrency),
    )


COMMANDS = [migrate, worker, workers, beat]

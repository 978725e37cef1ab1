"""Celery tasks: thin wrappers that decode, call the engine, encode.

``stage.<worker type>`` runs any action of that worker type (its queue is the worker type's
queue); ``coordinator.*`` run on the coordinator queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore

from orchestrator.constants import STAGE_TASK_PREFIX
from orchestrator.engine import coordinator
from orchestrator.engine.estimates import refit
from orchestrator.engine.housekeeping import sweep
from orchestrator.engine.recovery import reconcile as reconcile_runs
from orchestrator.engine.stage.runner import run_stage
from orchestrator.runtime import Runtime
from orchestrator.sdk import Registry
from orchestrator.settings import Settings
from orchestrator.worker_registry import refresh


def register(app: Celery, settings: Settings, registry: Registry) -> None:
    """Register one ``stage.<worker type>`` task per worker type and the coordinator's."""
    runtime = Runtime(settings, app)
    runtime.preload()  # before a prefork pool forks: its children inherit what it loads
    app.conf.orchestrator_runtime = runtime
    stage = _stage_task(runtime)
    # max_retries=None: Celery's own cap (3 retries) must not cut the stage's policy short.
    # shared=False: these closures belong to this app only, not to every app made later.
    for worker_type in registry.names():
        name = STAGE_TASK_PREFIX + worker_type
        app.task(name=name, bind=True, acks_late=True, max_retries=None, shared=False)(stage)
    _register_coordinator(app, runtime)


def _stage_task(runtime: Runtime) -> Callable[..., Any]:
    """The body of every stage task: run the stage; retry, drop or pass its packet on."""

    def stage(
        self: Task,
        upstream: Any = None,
        *,
        execution_id: str,
        stage_id: str,
        deps: list[str] | None = None,
        launch: str | None = None,
        attempt: int = 1,
        rank: int | None = None,
    ) -> Any:
        outcome = run_stage(
            runtime,
            execution_id,
            stage_id,
            deps or [],
            worker=self.name.removeprefix(STAGE_TASK_PREFIX),
            attempt=attempt,
            task_id=self.request.id,
            launch=launch,
            rank=rank,
        )
        if outcome.stale:
            raise Ignore()  # a message of an earlier launch: acknowledged, its chain ends here
        if outcome.retry_in is not None:
            # The stage's policy decides how often; waiting for a slot is not an attempt.
            again = attempt if outcome.waited else attempt + 1
            raise self.retry(
                countdown=outcome.retry_in,
                kwargs={**(self.request.kwargs or {}), "attempt": again},
            )
        # Nothing reads what a stage returns: the next stage reads its packet from the run's
        # live state, and a chord (fan-in) only counts its header's ends. So none is encoded.
        return None

    return stage


def _register_coordinator(app: Celery, runtime: Runtime) -> None:
    """The coordinator's tasks: start, launch, finish, and what beat schedules."""

    # start and launch: nothing reads their results (the run's row and events say it all),
    # so none is stored. finish's is: a caller may wait on a run's end as on any task's.
    @app.task(shared=False, name="coordinator.start", ignore_result=True)
    def start(execution_id: str) -> str:
        return coordinator.start(runtime, execution_id)

    @app.task(shared=False, name="coordinator.launch", ignore_result=True)
    def launch(execution_id: str) -> None:
        coordinator.launch(runtime, execution_id)

    @app.task(shared=False, name="coordinator.finish")
    def finish(upstream: Any = None, *, execution_id: str, launch: str | None = None) -> str:
        return coordinator.finish(runtime, execution_id, launch=launch)

    @app.task(shared=False, name="coordinator.reconcile", ignore_result=True)
    def reconcile() -> dict[str, int]:
        return reconcile_runs(runtime)

    @app.task(shared=False, name="coordinator.refit_estimates", ignore_result=True)
    def refit_estimates() -> None:
        refit(runtime)

    @app.task(shared=False, name="coordinator.refresh_worker_health", ignore_result=True)
    def refresh_worker_health() -> None:
        refresh(runtime, ping=True)

    @app.task(shared=False, name="coordinator.housekeeping", ignore_result=True)
    def housekeeping() -> dict[str, int]:
        return sweep(runtime).as_dict()

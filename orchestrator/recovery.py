"""Durability: resume from checkpoints, and the reconciler that finds runs left behind.

A checkpoint is a completed stage: its row, its packet, its output still in storage with its
checksum. Resume reruns what is not a checkpoint and everything downstream of it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select

from orchestrator import coordinator, template_registry
from orchestrator.constants import (
    RUN_HALTED,
    STAGE_ENDED,
    ExecutionStatus,
    StageStatus,
    redis_key,
)
from orchestrator.core.handshake import DataRef
from orchestrator.core.templates import bind
from orchestrator.db import PipelineExecution, StageExecution
from orchestrator.errors import Conflict, OrchestratorError
from orchestrator.events import stream_key
from orchestrator.run_state import RunState, now_ms
from orchestrator.runtime import Runtime

log = logging.getLogger(__name__)

RESUMABLE = {ExecutionStatus.FAILED, ExecutionStatus.CANCELLED, ExecutionStatus.STOPPED}
#: The reconciler resumes a run that lost its live state or workers at most this many times
#: in a row without a stage completing in between (a run that makes progress goes on).
MAX_AUTO_RESUMES = 3
#: How long the reconciler remembers a run's automatic resumes.
AUTO_RESUME_MEMORY_S = 7 * 24 * 3600


def rerun_set(stages: list[Any], good: set[str]) -> list[str]:
    """Stages that are not good checkpoints, and every stage downstream of one of them."""
    rerun: set[str] = set()
    for stage in stages:  # template order: dependencies come first
        if stage.id not in good or any(d in rerun for d in stage.depends_on):
            rerun.add(stage.id)
    return [s.id for s in stages if s.id in rerun]


def resume(
    runtime: Runtime,
    execution_id: str,
    *,
    parameters: dict[str, Any] | None = None,
    allow_running: bool = False,
) -> list[str]:
    """Rerun what did not complete, on the template's current version (and new parameters).

    A checkpoint counts only if its output is still there with its checksum and the stage's
    bound params did not change; returns the stages that will run again.
    """
    execution = coordinator.load(runtime, execution_id)
    status = ExecutionStatus(execution.status)
    if status not in RESUMABLE and not (allow_running and status == ExecutionStatus.RUNNING):
        raise Conflict(
            f"execution {execution_id!r} is {status.value}; only failed, cancelled or "
            "stopped executions can be resumed"
        )
    template = template_registry.get(runtime.db, execution.template_name)
    new_parameters = {**execution.parameters, **(parameters or {})}
    stages = bind(template, new_parameters)
    old = {
        s.id: s
        for s in bind(
            template_registry.get(runtime.db, execution.template_name, execution.template_version),
            execution.parameters,
        )
    }
    with runtime.db.session() as session:
        rows = {
            r.stage_name: r
            for r in session.scalars(
                select(StageExecution).where(StageExecution.execution_id == execution_id)
            )
        }
    good = set()
    for stage in stages:
        row = rows.get(stage.id)
        before = old.get(stage.id)
        if (
            row is None
            or row.status not in {StageStatus.COMPLETED, StageStatus.CACHED}
            or not row.data_reference
            or before is None
            or (before.params, before.worker, before.action)
            != (stage.params, stage.worker, stage.action)
        ):
            continue
        if runtime.outputs.available(DataRef.model_validate(row.data_reference)):
            good.add(stage.id)
    rerun = rerun_set(stages, good)
    runtime.admission.release(execution_id)
    with runtime.db.session() as session:
        row = session.get(PipelineExecution, execution_id)
        assert row is not None
        row.template_version = template.version
        row.parameters = new_parameters
        row.status = ExecutionStatus.PENDING
        row.error = None
        row.completed_at = None
        row.rerun_stages = rerun
        row.resume_count = (row.resume_count or 0) + 1
        existing = {
            r.stage_name
            for r in session.scalars(
                select(StageExecution).where(StageExecution.execution_id == execution_id)
            )
        }
        for stage in stages:
            if stage.id not in existing:
                session.add(coordinator.stage_row(execution_id, stage))
        bound = {s.id: s for s in stages}
        for stage_row in session.scalars(
            select(StageExecution).where(
                StageExecution.execution_id == execution_id, StageExecution.stage_name.in_(rerun)
            )
        ):
            stage_row.status = StageStatus.PENDING
            stage_row.error = None
            # A new template version may run the stage on another worker or action.
            stage_row.worker_name = bound[stage_row.stage_name].worker
            stage_row.action = bound[stage_row.stage_name].action
    # Until the next launch, no message of the old one may start a stage or close the run.
    state = RunState(runtime.redis)
    if state.exists(execution_id):
        state.set_meta(execution_id, launch=None)
    # A fresh event stream: followers of the resumed run must not stop at the old final event.
    runtime.redis.delete(stream_key(execution_id))
    state.publish(
        execution_id,
        {
            "type": "execution",
            "stage": None,
            "status": "resumed",
            "progress": 0.0,
            "message": f"resuming: {len(rerun)} stage(s) to run, {len(good)} from checkpoints",
            "estimated_remaining_ms": execution.estimated_time_ms,
        },
    )
    runtime.celery.send_task("coordinator.start", kwargs={"execution_id": execution_id})
    return rerun


def reconcile(runtime: Runtime) -> dict[str, int]:
    """One pass of the beat reconciler; every step is idempotent.

    - Admit waiting runs that fit now (releases normally wake them; this catches leases that
      expired because their holder died).
    - Renew the leases of runs that are alive.
    - A running execution whose live state is gone (Redis restarted) or whose running stages
      all lost their capacity lease (their worker died) is resumed from its checkpoints.
    - A running execution whose every stage ended long ago lost its ``finish`` (the
      coordinator died in it): it is finished now.
    """
    counts = {"admitted": 0, "renewed": 0, "resumed": 0, "failed": 0, "finished": 0}
    for admitted in runtime.admission.admit_pending():
        runtime.celery.send_task("coordinator.launch", kwargs={"execution_id": admitted})
        counts["admitted"] += 1
    state = RunState(runtime.redis)
    with runtime.db.session() as session:
        running = session.scalars(
            select(PipelineExecution).where(PipelineExecution.status == ExecutionStatus.RUNNING)
        ).all()
    for execution in running:
        execution_id = execution.execution_id
        live = state.exists(execution_id)
        records = state.stages(execution_id) if live else {}
        if live and _unfinished(runtime, state, execution_id, records):
            log.warning(
                "execution %s ran every stage but was never finished; finishing", execution_id
            )
            state.drop_finish_claim(execution_id)
            coordinator.finish(runtime, execution_id)
            counts["finished"] += 1
            continue
        if live and not _lost_stages(runtime, execution_id, records):
            runtime.admission.renew(execution_id)
            counts["renewed"] += 1
            continue
        if live and _busy(runtime, execution_id, records):
            runtime.admission.renew(execution_id)
            continue  # some stage is still alive: wait for it before rerunning the rest
        coordinator.persist(runtime, execution_id, records, state.packets(execution_id))
        if not _may_auto_resume(runtime, execution_id):
            coordinator.finish(
                runtime,
                execution_id,
                status=ExecutionStatus.FAILED,
                error=f"lost its workers or live state {MAX_AUTO_RESUMES} times in a row "
                "without completing a stage",
            )
            counts["failed"] += 1
            continue
        log.warning("execution %s lost its live state or workers; resuming", execution_id)
        with runtime.db.session() as session:
            row = session.get(PipelineExecution, execution_id)
            assert row is not None
            row.status = ExecutionStatus.FAILED  # resumable from here
        try:
            resume(runtime, execution_id)
            counts["resumed"] += 1
        except OrchestratorError as exc:
            coordinator.finish(
                runtime,
                execution_id,
                status=ExecutionStatus.FAILED,
                error=f"could not resume: {exc}",
            )
            counts["failed"] += 1
    return counts


def _may_auto_resume(runtime: Runtime, execution_id: str) -> bool:
    """Count one more automatic resume; False once MAX_AUTO_RESUMES came without progress."""
    with runtime.db.session() as session:
        done = session.scalar(
            select(func.count())
            .select_from(StageExecution)
            .where(
                StageExecution.execution_id == execution_id,
                StageExecution.status.in_([StageStatus.COMPLETED, StageStatus.CACHED]),
            )
        )
    key = redis_key("autoresume", execution_id)
    seen = runtime.redis.hgetall(key)
    stalled = int(seen.get(b"stalled", 0))
    if int(seen.get(b"checkpoints", -1)) < (done or 0):
        stalled = 0  # stages completed since the last resume: the run is getting somewhere
    if stalled >= MAX_AUTO_RESUMES:
        return False
    runtime.redis.hset(key, mapping={"checkpoints": done or 0, "stalled": stalled + 1})
    runtime.redis.expire(key, AUTO_RESUME_MEMORY_S)
    return True


def _slot_alive(runtime: Runtime, worker: str, holder: str) -> bool:
    deadline = runtime.redis.zscore(redis_key("slots", worker), holder)
    return deadline is not None and deadline > now_ms()


def _lost_stages(
    runtime: Runtime, execution_id: str, records: dict[str, dict[str, Any]]
) -> list[str]:
    """Stages whose worker died: running with a lapsed capacity lease, or due to try again
    (after a backoff or a wait for a slot) longer than a lease ago and never back."""
    overdue = now_ms() - runtime.admission.lease_ttl_ms
    return [
        stage_id
        for stage_id, record in records.items()
        if (
            record.get("status") == StageStatus.RUNNING
            and not _slot_alive(runtime, record["worker"], f"{execution_id}:{stage_id}")
        )
        or (
            record.get("status") in {"retrying", "waiting"}
            and record.get("retry_at", overdue) < overdue
        )
    ]


def _unfinished(
    runtime: Runtime, state: RunState, execution_id: str, records: dict[str, dict[str, Any]]
) -> bool:
    """Every planned stage ended (or the run halted with none in flight) more than two lease
    periods ago, and still no ``finish``: the coordinator that was finishing it died."""
    if any(r.get("status") not in STAGE_ENDED for r in records.values()):
        return False
    meta = state.meta(execution_id)
    if meta.get("status") not in RUN_HALTED and set(records) < set(state.plan(execution_id)):
        return False  # stages still to come (their messages may be queued)
    last = max((r.get("completed_at") or 0 for r in records.values()), default=0)
    last = last or meta.get("started_ms", 0)
    return bool(last) and now_ms() - last > 2 * runtime.admission.lease_ttl_ms


def _busy(runtime: Runtime, execution_id: str, records: dict[str, dict[str, Any]]) -> bool:
    return any(
        record.get("status") == StageStatus.RUNNING
        and _slot_alive(runtime, record["worker"], f"{execution_id}:{stage_id}")
        for stage_id, record in records.items()
    )

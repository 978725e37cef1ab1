"""The coordinator: submits, admits, launches, finishes and cancels executions.

Its functions run in the ``coordinator`` worker (through the thin tasks of ``tasks.py``) or,
for ``submit`` and ``cancel``, in the API process. The database holds the durable record;
the run's Redis state (``run_state``) is what stages read and write while it runs.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, raiseload

from orchestrator import template_registry
from orchestrator.constants import (
    LAUNCHABLE,
    STAGE_ACTIVE,
    AdmissionDecision,
    ExecutionStatus,
    LiveStatus,
    Priority,
    StageStatus,
    redis_key,
)
from orchestrator.core import quota
from orchestrator.core.estimator import critical_path_ms, topological
from orchestrator.core.planner import plan as make_plan
from orchestrator.core.quota import RunNeeds, run_needs
from orchestrator.core.templates import BoundStage, bind
from orchestrator.db import PipelineExecution, StageExecution
from orchestrator.engine import estimates
from orchestrator.engine.admission import PRIORITY_RANK
from orchestrator.engine.canvas import build_canvas
from orchestrator.engine.events import execution_event, final_event
from orchestrator.engine.run_state import RunMeta, RunState, StageRecord, now_ms
from orchestrator.errors import (
    Conflict,
    NotFound,
    OrchestratorError,
    ResourceExhausted,
    ValidationFailed,
)
from orchestrator.ops.tracing import annotate, span, traced
from orchestrator.runtime import Runtime

log = logging.getLogger(__name__)

PER = {"day": "daily", "month": "monthly"}

#: How long a launch holds its claim: if its process dies, the next launch may go after this.
LAUNCH_CLAIM_MS = 30_000


def check_admissible(
    runtime: Runtime, needs: RunNeeds, client_id: str | None, session: Session
) -> None:
    """Refuse at the door what admission would refuse later: 422 for a run that can never
    fit the pool, 429 (with when to retry) for one that cannot fit today's or this month's
    quota whatever is released, or for a client with too many runs waiting already."""
    pool = runtime.pool
    never = [
        f"worker type {worker} has no capacity (max_concurrent is 0)"
        for worker in needs.workers
        if pool.workers.max_for(worker) == 0
    ]
    limits = {name: (lim.daily_limit, lim.monthly_limit) for name, lim in pool.resources.items()}
    now, spent = runtime.admission.spent([r for r in needs.quotas if r in limits])
    short = quota.shortfalls(needs.quotas, spent, limits, now)
    details = [
        {"resource": s.resource, "window": s.window, "needed": s.needed, "limit": s.limit}
        | {"available": s.available}
        for s in short
    ]
    never += [
        f"{s.resource} needs {s.needed:g}, more than its {PER[s.window]} limit of {s.limit:g}"
        for s in short
        if s.never_fits
    ]
    if never:
        raise ValidationFailed(
            "the run can never be admitted: " + "; ".join(never), details=details
        )
    if short:
        reasons = [
            f"{s.resource}: {s.available:g} of {s.limit:g} left this {s.window}, "
            f"{s.needed:g} needed"
            for s in short
        ]
        raise ResourceExhausted(
            "over quota: " + "; ".join(reasons),
            retry_after_s=max(s.retry_after_ms for s in short) / 1000,
            details=details,
        )
    if client_id is not None:
        cap = pool.admission.max_waiting_runs_per_client
        waiting = session.scalar(
            select(func.count())
            .select_from(PipelineExecution)
            .where(
                PipelineExecution.client_id == client_id,
                PipelineExecution.status.in_([str(s) for s in LAUNCHABLE]),
            )
        )
        if (waiting or 0) >= cap:
            raise ResourceExhausted(
                f"client {client_id!r} already has {waiting} runs waiting (the limit is {cap})",
                retry_after_s=runtime.pool.lease_ttl_s / 4,
                details={"waiting_runs": waiting, "limit": cap},
            )


@traced("submit", template="template_name", client="client_id")
def submit(
    runtime: Runtime,
    template_name: str,
    parameters: dict[str, Any],
    *,
    client_id: str | None = None,
    request_id: str | None = None,
    priority: Priority = Priority.NORMAL,
) -> tuple[PipelineExecution, bool]:
    """Record a new execution with its estimate and hand it to the coordinator; idempotent
    per request id. The estimate (and each stage's features) is what the run will be judged
    by, and learned from, when it ends.

    Returns the execution and whether it was created now (False: the same client sent the
    same ``request_id`` before, and this is that execution). The template, the client's
    waiting runs and the new rows are read and written in one session; a request id is
    looked up only when something refuses the run (a retry of an accepted request must get
    its run, not a refusal that came since) or its insert finds it taken.
    """
    try:
        with runtime.db.session() as session:
            template, stages = template_registry.prepare(
                runtime, template_name, parameters, session
            )
            check_admissible(runtime, run_needs(stages, runtime.unusable), client_id, session)
            running, waiting = runtime.admission.load()
            estimate = estimates.estimate_now(runtime, stages, running, waiting)
            execution = PipelineExecution(
                execution_id=f"exec_{uuid.uuid4().hex[:20]}",
                request_id=request_id,
                client_id=client_id,
                template_name=template.name,
                template_version=template.version,
                parameters=dict(parameters),
                priority=Priority(priority).value,
                status=ExecutionStatus.PENDING,
                estimated_cost_usd=round(estimate.cost_usd, 10),
                estimated_time_ms=estimate.time_ms,
                estimate=estimates.recorded(estimate, running, waiting),
            )
            annotate(execution=execution.execution_id)
            session.add(execution)
            session.flush()  # the run's row first: its stages refer to it
            # One bulk INSERT of plain rows: the unit of work's bookkeeping for each stage
            # object cost more than the statement.
            session.execute(
                insert(StageExecution),
                [
                    stage_values(execution.execution_id, s, estimates.features_of(runtime, s))
                    for s in stages
                ],
            )
    except (IntegrityError, OrchestratorError):
        existing = find_by_request(runtime, client_id, request_id) if request_id else None
        if existing is None:
            raise
        return existing, False
    # The run's first event, written before the 202 leaves: a subscriber sees at once that
    # its run was accepted, whatever the coordinator's queue holds before its start.
    accepted = execution_event(ExecutionStatus.PENDING, "accepted", estimate.time_ms)
    RunState(runtime.redis).publish(execution.execution_id, accepted)
    runtime.celery.send_task(
        "coordinator.start",
        kwargs={"execution_id": execution.execution_id},
        priority=Priority(priority).celery_priority,
    )
    return execution, True


def find_by_request(
    runtime: Runtime, client_id: str | None, request_id: str | None
) -> PipelineExecution | None:
    with runtime.db.session() as session:
        return session.scalar(
            select(PipelineExecution).where(
                PipelineExecution.client_id == client_id,
                PipelineExecution.request_id == request_id,
            )
        )


def stage_values(
    execution_id: str, stage: BoundStage, features: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A new stage row's columns: pending, nothing spent yet."""
    return {
        "stage_id": f"{execution_id}.{stage.id}",
        "execution_id": execution_id,
        "stage_name": stage.id,
        "worker_name": stage.worker,
        "action": stage.action,
        "stage_order": stage.order,
        "status": StageStatus.PENDING,
        "attempts": 0,
        "cache_hit": False,
        "cost_usd": 0.0,
        "features": features,
    }


def stage_row(
    execution_id: str, stage: BoundStage, features: dict[str, Any] | None = None
) -> StageExecution:
    return StageExecution(**stage_values(execution_id, stage, features))


def load(runtime: Runtime, execution_id: str, *, stages: bool = True) -> PipelineExecution:
    """The execution's row; with ``stages=False`` its stage rows are not loaded (the
    coordinator's own reads need only the run's row: reading its stages raises)."""
    with runtime.db.session() as session:
        return _load_in(session, execution_id, stages=stages)


def _load_in(session: Session, execution_id: str, *, stages: bool) -> PipelineExecution:
    options = [] if stages else [raiseload(PipelineExecution.stages)]
    execution = session.get(PipelineExecution, execution_id, options=options)
    if execution is None:
        raise NotFound(f"execution {execution_id!r} not found")
    return execution


def client_of(runtime: Runtime, execution_id: str) -> str | None:
    """Whose execution it is (one column of its row); ``NotFound`` if there is none."""
    with runtime.db.session() as session:
        found = session.execute(
            select(PipelineExecution.client_id).where(
                PipelineExecution.execution_id == execution_id
            )
        ).first()
    if found is None:
        raise NotFound(f"execution {execution_id!r} not found")
    return found.client_id


def hand_off(runtime: Runtime, admitted: list[str]) -> None:
    """Launch the runs a release admitted from the queue.

    Every admission is also noted in Redis until its launch, so if this process dies before
    the messages leave, the reconciler sends them; a launch sent twice launches once.
    """
    for execution_id in admitted:
        runtime.celery.send_task("coordinator.launch", kwargs={"execution_id": execution_id})


def start(runtime: Runtime, execution_id: str) -> str:
    """Ask admission for the whole run; launch it, queue it, or refuse it with the reason."""
    with runtime.db.session() as session:  # the run's row and its template, one session
        execution = _load_in(session, execution_id, stages=False)
        if execution.status not in LAUNCHABLE:
            return execution.status  # a redelivered start: already handled
        template = template_registry.read(
            session, execution.template_name, execution.template_version
        )
    bound = bind(template, execution.parameters)
    stages = bound
    if execution.rerun_stages is not None:  # a resume: only what did not complete runs
        stages = [s for s in stages if s.id in set(execution.rerun_stages)]
    with span("admission", execution=execution_id):
        decision = runtime.admission.reserve(
            execution_id, run_needs(stages, runtime.unusable), Priority(execution.priority)
        )
        annotate(decision=str(decision.status))
    state = RunState(runtime.redis)
    if decision.status == AdmissionDecision.ADMITTED:
        launch(runtime, execution_id, bound=bound, execution=execution)
        return ExecutionStatus.RUNNING
    if decision.status == AdmissionDecision.WAITING:
        waiting = "waiting for resources: " + "; ".join(decision.reasons)
        remaining = execution.estimated_time_ms
        state.publish(execution_id, execution_event(ExecutionStatus.PENDING, waiting, remaining))
        return ExecutionStatus.PENDING
    finish(
        runtime,
        execution_id,
        status=ExecutionStatus.FAILED,
        error="refused: " + "; ".join(decision.reasons),
    )
    return ExecutionStatus.FAILED


def launch(
    runtime: Runtime,
    execution_id: str,
    *,
    bound: list[BoundStage] | None = None,
    execution: PipelineExecution | None = None,
) -> bool:
    """Launch an admitted run once, however many times it is asked; True if this call did.

    A claim in Redis keeps concurrent launchers apart; the database's move from pending (or
    recovering) to running is the commit point, so a run cancelled meanwhile is not started.
    A launcher that dies before that leaves the run in admission's admitted set, where the
    reconciler finds it; one that dies after leaves a live state without stages, which the
    reconciler's stall check resumes. ``bound`` and ``execution``: the run's stages and row,
    if the caller has them (``start`` just read the row: a cancel since is caught by the
    database's compare-and-set all the same).
    """
    claim = redis_key("launching", execution_id)
    if not runtime.redis.set(claim, "1", nx=True, px=LAUNCH_CLAIM_MS):
        return False  # another launcher is at it
    try:
        execution = execution or load(runtime, execution_id, stages=False)
        if execution.status not in LAUNCHABLE:  # launched before, or cancelled meanwhile
            runtime.admission.launched(execution_id)
            if ExecutionStatus(execution.status).terminal:
                hand_off(runtime, runtime.admission.release(execution_id))
            return False
        launched = _launch(runtime, execution, bound)
        runtime.admission.launched(execution_id)
        return launched
    finally:
        runtime.redis.delete(claim)


def _launch(runtime: Runtime, execution: PipelineExecution, bound: list[BoundStage] | None) -> bool:
    """Write the run's plan to Redis, mark it running, send its canvas.

    A resumed run sends only its ``rerun_stages``; the packets of the checkpoints they
    depend on are seeded into the live state, so those stages read them as usual. Each launch
    has its own token: messages of an earlier launch are recognised as stale and dropped.
    """
    execution_id = execution.execution_id
    stages, seeded = _stages_to_run(runtime, execution, bound)
    specs = _specs(stages)
    deps = topological({s.id: [d for d in s.depends_on if d in specs] for s in stages})
    state = RunState(runtime.redis)
    token = uuid.uuid4().hex[:12]
    state.create(execution_id, _live_meta(execution, stages, deps, token), specs, seeded)
    # The canvas orders only the stages that run; checkpoints are already there.
    plan = make_plan(deps)
    if not plan.exact:
        log.info("execution %s: DAG is not series-parallel; some stages wait longer", execution_id)
    priority = Priority(execution.priority)
    canvas = build_canvas(
        runtime.celery,
        execution_id,
        plan,
        specs,
        priority=priority.celery_priority,
        launch=token,
        rank=PRIORITY_RANK[priority],
    )
    if not _mark_running(runtime, execution_id):
        state.drop(execution_id)  # cancelled since it was loaded: nothing was sent
        return False
    from_checkpoints = f" ({len(seeded)} from checkpoints)" if seeded else ""
    started = f"started {len(stages)} stages{from_checkpoints}"
    remaining = execution.estimated_time_ms
    state.publish(execution_id, execution_event(ExecutionStatus.RUNNING, started, remaining))
    canvas.apply_async()
    return True


def _stages_to_run(
    runtime: Runtime, execution: PipelineExecution, bound: list[BoundStage] | None
) -> tuple[list[BoundStage], dict[str, dict[str, Any]]]:
    """The bound stages this launch runs, and the packets of the checkpoints it starts from."""
    stages = bound
    if stages is None:
        template = template_registry.get(
            runtime.db, execution.template_name, execution.template_version
        )
        stages = bind(template, execution.parameters)
    if execution.rerun_stages is None:
        return stages, {}
    rerun = set(execution.rerun_stages)
    done = {s.id for s in stages} - rerun
    seeded = checkpoint_packets(runtime, execution.execution_id, done)
    return [s for s in stages if s.id in rerun], seeded


def _specs(stages: list[BoundStage]) -> dict[str, dict[str, Any]]:
    """Each stage as its task reads it from the live plan, with the handshake's ``next``."""
    dependents: dict[str, list[BoundStage]] = defaultdict(list)
    for stage in stages:
        for dep in stage.depends_on:
            dependents[dep].append(stage)
    specs = {}
    for stage in stages:
        spec = stage.model_dump(mode="json")
        nxt = dependents.get(stage.id)
        spec["next"] = (
            {"worker": nxt[0].worker, "action": nxt[0].action, "params": {}} if nxt else {}
        )
        specs[stage.id] = spec
    return specs


def _live_meta(
    execution: PipelineExecution,
    stages: list[BoundStage],
    deps: dict[str, list[str]],
    token: str,
) -> RunMeta:
    stated = (execution.estimate or {}).get("stages") or {}
    return {
        "launch": token,
        "status": LiveStatus.RUNNING,
        "started_ms": now_ms(),
        "estimated_time_ms": execution.estimated_time_ms or critical_path_ms(stages),
        # For the ETA of each event: what is left is recomputed from these.
        "deps": deps,
        "stage_p50": {s: interval["p50"] for s, interval in stated.items() if s in deps},
        "priority": execution.priority,
        "client_id": execution.client_id,
    }


def _mark_running(runtime: Runtime, execution_id: str) -> bool:
    """Pending or recovering -> running, in one statement; False if the run left those."""
    with runtime.db.session() as session:
        result = session.execute(
            update(PipelineExecution)
            .where(
                PipelineExecution.execution_id == execution_id,
                PipelineExecution.status.in_([str(s) for s in LAUNCHABLE]),
            )
            .values(
                status=ExecutionStatus.RUNNING,
                started_at=func.coalesce(PipelineExecution.started_at, datetime.now(UTC)),
            )
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def checkpoint_packets(
    runtime: Runtime, execution_id: str, stage_ids: set[str]
) -> dict[str, dict[str, Any]]:
    """Handshake packets rebuilt from the rows of completed stages."""
    with runtime.db.session() as session:
        rows = session.scalars(
            select(StageExecution).where(StageExecution.execution_id == execution_id)
        ).all()
    return {
        row.stage_name: {
            "pipeline_id": execution_id,
            "stage_id": row.stage_name,
            "timestamp": (row.completed_at or datetime.now(UTC)).isoformat(),
            "data_ref": row.data_reference,
            "summary": row.summary_data,
            "next": {"worker": None, "action": None, "params": {}},
        }
        for row in rows
        if row.stage_name in stage_ids and row.data_reference and row.summary_data
    }


@traced("finish", execution="execution_id")
def finish(
    runtime: Runtime,
    execution_id: str,
    *,
    status: ExecutionStatus | None = None,
    error: str | None = None,
    launch: str | None = None,
) -> str:
    """Close the run once: persist stages, settle totals, release everything, final event.

    ``launch`` is given by the canvas's last task: the canvas of an earlier launch (or one
    whose live state was lost) closes nothing; the current launch or the reconciler does.
    """

    state = RunState(runtime.redis)
    closing = state.begin_finish(execution_id, launch)
    if closing is None:  # another launch's canvas, or someone else finishes it
        return load(runtime, execution_id, stages=False).status
    meta, records, packets = closing
    if status is None:
        status = _outcome(meta, records)
    error = error or meta.get("error")
    with runtime.db.session() as session:
        row = session.get(
            PipelineExecution,
            execution_id,
            with_for_update=True,
            options=[raiseload(PipelineExecution.stages)],
        )
        if row is None:
            raise NotFound(f"execution {execution_id!r} not found")
        if ExecutionStatus(row.status).terminal:
            write_records(session, execution_id, records, packets)
            return row.status
        stopped = status in {ExecutionStatus.CANCELLED, ExecutionStatus.FAILED}
        row.status = status
        row.error = error
        row.completed_at = datetime.now(UTC)
        row.total_cost_usd = write_records(session, execution_id, records, packets, stopped)
        if row.started_at is not None:
            started = (
                row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=UTC)
            )
            row.total_time_ms = int((row.completed_at - started).total_seconds() * 1000)
        total_cost, total_time = row.total_cost_usd, row.total_time_ms
    for stage_id, record in records.items():  # stages stopped mid-way give their slots back
        if record.get("status") in STAGE_ACTIVE:
            runtime.admission.release_slot(record["worker"], f"{execution_id}:{stage_id}")
    hand_off(runtime, runtime.admission.release(execution_id))
    final = final_event(str(status), error or str(status), total_cost, total_time)
    state.publish(execution_id, final, meta={"status": str(status)})
    return status


def _outcome(meta: RunMeta, records: Mapping[str, StageRecord]) -> ExecutionStatus:
    statuses = {r.get("status") for r in records.values()}
    if meta.get("status") == ExecutionStatus.CANCELLED:
        return ExecutionStatus.CANCELLED
    if StageStatus.FAILED in statuses or meta.get("status") in {
        LiveStatus.FAILING,
        LiveStatus.FAILED,
    }:
        return ExecutionStatus.FAILED
    if StageStatus.SKIPPED in statuses or any(
        r.get("status") == StageStatus.COMPLETED and r.get("proceed") is False
        for r in records.values()
    ):
        return ExecutionStatus.STOPPED
    return ExecutionStatus.COMPLETED


def persist(
    runtime: Runtime,
    execution_id: str,
    records: Mapping[str, StageRecord],
    packets: dict[str, dict[str, Any]],
) -> None:
    """Copy the live stage records into ``stage_executions`` (idempotent)."""
    if not records:
        return
    with runtime.db.session() as session:
        rows = session.scalars(
            select(StageExecution).where(StageExecution.execution_id == execution_id)
        )
        copy_records(rows, records, packets)


def copy_records(
    rows: Iterable[StageExecution],
    records: Mapping[str, StageRecord],
    packets: dict[str, dict[str, Any]],
) -> None:
    """Bring stage rows up to their live records (in the caller's transaction). For runs
    still going (``persist``): the unit of work writes only the rows that changed."""
    for row in rows:
        if row.stage_name in records:
            values = record_values(records[row.stage_name], packets.get(row.stage_name))
            for column, value in values.items():
                setattr(row, column, value)


def write_records(
    session: Session,
    execution_id: str,
    records: Mapping[str, StageRecord],
    packets: dict[str, dict[str, Any]],
    stopped: bool = False,
) -> float:
    """``copy_records`` for a run's end, when every row with a record changes: one bulk
    UPDATE of those rows; with ``stopped``, stages that never ended are marked cancelled.
    Returns the run's total cost."""
    current = session.execute(
        select(StageExecution.stage_name, StageExecution.status, StageExecution.cost_usd).where(
            StageExecution.execution_id == execution_id
        )
    ).all()
    changes = []
    total = 0.0
    for name, status, cost in current:
        values = record_values(records[name], packets.get(name)) if name in records else {}
        if stopped and values.get("status", status) in {StageStatus.PENDING, *STAGE_ACTIVE}:
            values["status"] = StageStatus.CANCELLED
        if values:
            changes.append({"stage_id": f"{execution_id}.{name}", **values})
        total += values.get("cost_usd", cost) or 0.0
    if changes:
        session.execute(update(StageExecution), changes)
    return round(total, 10)


def record_values(record: StageRecord, packet: dict[str, Any] | None) -> dict[str, Any]:
    """The stage row's columns that a live record (and its packet) sets."""
    values: dict[str, Any] = {
        "task_id": record.get("task_id"),
        "error": record.get("error") or record.get("reason"),
        "cache_hit": bool(record.get("cache_hit")),
        "cost_usd": record.get("cost_usd", 0.0) or 0.0,
        "time_ms": record.get("time_ms"),
        "started_at": _from_ms(record.get("started_at")),
        "completed_at": _from_ms(record.get("completed_at")),
    }
    for column in ("status", "attempts"):
        if column in record:
            values[column] = record[column]
    if packet is not None:
        values["data_reference"] = packet["data_ref"]
        values["summary_data"] = packet["summary"]
    return values


def _from_ms(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if value else None


def cancel(runtime: Runtime, execution_id: str) -> str:
    """Stop the run: no new stage starts, running ones are revoked, everything released."""
    execution = load(runtime, execution_id)
    if ExecutionStatus(execution.status).terminal:
        raise Conflict(f"execution {execution_id!r} is already {execution.status}")
    state = RunState(runtime.redis)
    if state.exists(execution_id):
        state.set_meta(execution_id, status=ExecutionStatus.CANCELLED)
        running = [
            str(r["task_id"])
            for r in state.stages(execution_id).values()
            if r.get("status") in {StageStatus.RUNNING, StageStatus.RETRYING} and r.get("task_id")
        ]
        if running:
            runtime.celery.control.revoke(running, terminate=True, signal="SIGTERM")
    hand_off(runtime, runtime.admission.withdraw(execution_id))
    return finish(
        runtime, execution_id, status=ExecutionStatus.CANCELLED, error="cancelled by request"
    )

"""Durability: resume from checkpoints, and the reconciler that finds runs left behind.

A checkpoint is a completed stage: its row, its packet, its output still in storage with its
checksum. Resume reruns what is not a checkpoint and everything downstream of it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from kombu.exceptions import ChannelError
from sqlalchemy import func, select

from orchestrator import template_registry
from orchestrator.constants import (
    COORDINATOR_QUEUE,
    LAUNCHABLE,
    RUN_HALTED,
    STAGE_ENDED,
    ExecutionStatus,
    StageStatus,
    redis_key,
)
from orchestrator.core.handshake import DataRef
from orchestrator.core.templates import BoundStage, bind
from orchestrator.db import PipelineExecution, StageExecution
from orchestrator.engine import coordinator, estimates
from orchestrator.engine.events import execution_event, stream_key
from orchestrator.engine.run_state import RunState, StageRecord, now_ms
from orchestrator.errors import Conflict, OrchestratorError
from orchestrator.runtime import Runtime

log = logging.getLogger(__name__)

RESUMABLE = {ExecutionStatus.FAILED, ExecutionStatus.CANCELLED, ExecutionStatus.STOPPED}
#: What the reconciler resumes on its own: runs that are, as far as anyone knows, going on.
RECOVERABLE = {ExecutionStatus.RUNNING, ExecutionStatus.RECOVERING}
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
    automatic: bool = False,
) -> list[str]:
    """Rerun what did not complete, on the template's current version (and new parameters).

    A checkpoint counts only if its output is still there with its checksum and the stage's
    bound params did not change; returns the stages that will run again. ``automatic`` is the
    reconciler's resume of a run that is still running as far as anyone knows: it becomes
    ``recovering`` (never ``failed``) and its event stream goes on; a resume asked for by a
    person starts a resumable (failed, cancelled, stopped) run anew, with a fresh stream.
    """
    execution = coordinator.load(runtime, execution_id)
    status = ExecutionStatus(execution.status)
    allowed = RECOVERABLE if automatic else RESUMABLE
    if status not in allowed:
        raise Conflict(
            f"execution {execution_id!r} is {status.value}; only failed, cancelled or "
            "stopped executions can be resumed"
        )
    template = template_registry.get(runtime.db, execution.template_name)
    new_parameters = {**execution.parameters, **(parameters or {})}
    stages = bind(template, new_parameters)
    good = _checkpoints(runtime, execution, stages)
    rerun = rerun_set(stages, good)
    _reset_rows(runtime, execution_id, template.version, new_parameters, stages, rerun, automatic)
    coordinator.hand_off(runtime, runtime.admission.release(execution_id))
    # Until the next launch, no message of the old one may start a stage or close the run.
    state = RunState(runtime.redis)
    if state.exists(execution_id):
        state.set_meta(execution_id, launch=None)
    if not automatic:
        # A fresh event stream: followers of the resumed run must not stop at the old final
        # event. An automatic resume sent no final event: its followers simply go on.
        runtime.redis.delete(stream_key(execution_id))
    now = ExecutionStatus.RECOVERING if automatic else ExecutionStatus.PENDING
    resuming = f"resuming: {len(rerun)} stage(s) to run, {len(good)} from checkpoints"
    state.publish(execution_id, execution_event(now, resuming, execution.estimated_time_ms))
    runtime.celery.send_task("coordinator.start", kwargs={"execution_id": execution_id})
    return rerun


def _checkpoints(
    runtime: Runtime, execution: PipelineExecution, stages: list[BoundStage]
) -> set[str]:
    """Stages whose completed output is still in storage, bound as they are now."""
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
                select(StageExecution).where(StageExecution.execution_id == execution.execution_id)
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
    return good


def _reset_rows(
    runtime: Runtime,
    execution_id: str,
    version: int,
    parameters: dict[str, Any],
    stages: list[BoundStage],
    rerun: list[str],
    automatic: bool,
) -> None:
    """The execution back to launchable, its rerun stages back to pending; Conflict if it
    changed status since it was read (a cancel in between is not undone)."""
    allowed = RECOVERABLE if automatic else RESUMABLE
    with runtime.db.session() as session:
        row = session.get(PipelineExecution, execution_id, with_for_update=True)
        assert row is not None
        if row.status not in allowed:
            raise Conflict(f"execution {execution_id!r} became {row.status} meanwhile")
        row.template_version = version
        row.parameters = parameters
        row.status = ExecutionStatus.RECOVERING if automatic else ExecutionStatus.PENDING
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
                features = estimates.features_of(runtime, stage)
                session.add(coordinator.stage_row(execution_id, stage, features))
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


#: The cases a reconciler pass counts (see ``reconcile``).
RECONCILED = (
    "admitted",
    "relaunched",
    "requeued",
    "renewed",
    "resumed",
    "stalled",
    "finished",
    "failed",
)


def reconcile(runtime: Runtime) -> dict[str, int]:
    """One pass of the beat reconciler; every step is idempotent, and each case it handles is
    counted in the result and logged once.

    - ``admitted``: waiting runs that fit now (releases normally wake them; this catches
      leases that expired because their holder died), launched.
    - ``relaunched``: runs admitted a while ago whose launch never happened (the process that
      admitted them died before sending it), launched again; their leases are kept alive.
    - ``requeued``: runs pending (or recovering) that hold no lease, wait in no queue and
      await no launch, on two passes in a row: their start was lost; it is sent again.
    - then each running execution: ``finished`` if every stage ended long ago but its finish
      was lost; ``renewed`` while it is alive; ``resumed`` from its checkpoints when its
      live state or workers are gone; ``stalled``, resumed the same way, when nothing of it
      moved for a lease period with nothing running and nothing queued for its next stages;
      ``failed`` once either happened too often without progress.
    """
    counts: Counter[str] = Counter()
    queues = QueueDepths(runtime)
    counts["admitted"] = _admit_waiting(runtime)
    counts["relaunched"] = _relaunch_lost_launches(runtime)
    counts["requeued"] = _requeue_orphans(runtime, queues)
    state = RunState(runtime.redis)
    with runtime.db.session() as session:
        running = session.scalars(
            select(PipelineExecution.execution_id).where(
                PipelineExecution.status == ExecutionStatus.RUNNING
            )
        ).all()
    for execution_id in running:
        counts[_check_running(runtime, state, queues, execution_id)] += 1
    return {case: counts[case] for case in RECONCILED}


def _admit_waiting(runtime: Runtime) -> int:
    admitted = runtime.admission.admit_pending()
    coordinator.hand_off(runtime, admitted)
    return len(admitted)


#: An admitted run's launch is presumed lost after this long (its message may be queued
#: behind others: a second launch is harmless, it launches once).
LAUNCH_GRACE_MS = 10_000


def _relaunch_lost_launches(runtime: Runtime) -> int:
    waiting = runtime.admission.admitted_before(now_ms() - LAUNCH_GRACE_MS)
    for execution_id in waiting:
        runtime.admission.renew(execution_id)  # the reservation outlives the late launch
        log.warning("execution %s was admitted but never launched; launching", execution_id)
    coordinator.hand_off(runtime, waiting)
    return len(waiting)


def _requeue_orphans(runtime: Runtime, queues: QueueDepths) -> int:
    """Send ``coordinator.start`` again for launchable runs nobody holds, seen twice."""
    with runtime.db.session() as session:
        launchable = session.scalars(
            select(PipelineExecution.execution_id).where(
                PipelineExecution.status.in_([str(s) for s in LAUNCHABLE])
            )
        ).all()
    key = redis_key("orphans")
    suspects = set(launchable) - runtime.admission.held(list(launchable))
    if suspects and queues.depth(COORDINATOR_QUEUE) > 0:
        suspects = set()  # their start may be waiting in the coordinator's backlog
    seen_before = {_text(r) for r in runtime.redis.smembers(key)}
    pipe = runtime.redis.pipeline(transaction=True)
    pipe.delete(key)
    if suspects:
        pipe.sadd(key, *suspects)
        pipe.expire(key, 3600)
    pipe.execute()
    orphans = sorted(suspects & seen_before)
    for execution_id in orphans:
        log.warning("execution %s was accepted but is held nowhere; queueing it", execution_id)
        runtime.celery.send_task("coordinator.start", kwargs={"execution_id": execution_id})
    return len(orphans)


def _check_running(
    runtime: Runtime, state: RunState, queues: QueueDepths, execution_id: str
) -> str:
    """Decide about one running execution; returns the count it falls under."""
    live = state.exists(execution_id)
    records = state.stages(execution_id) if live else {}
    if live and _unfinished(runtime, state, execution_id, records):
        log.warning("execution %s ran every stage but was never finished; finishing", execution_id)
        state.drop_finish_claim(execution_id)
        coordinator.finish(runtime, execution_id)
        return "finished"
    stalled = False
    if live and not _lost_stages(runtime, execution_id, records):
        stalled = _stalled(runtime, state, queues, execution_id, records)
        if not stalled:
            runtime.admission.renew(execution_id)
            return "renewed"
    elif live and _busy(runtime, execution_id, records):
        runtime.admission.renew(execution_id)
        return "alive"  # some stage is still alive: wait for it before rerunning the rest
    coordinator.persist(runtime, execution_id, records, state.packets(execution_id))
    unsafe = _not_idempotent(runtime, execution_id, records)
    if unsafe:
        coordinator.finish(
            runtime,
            execution_id,
            status=ExecutionStatus.FAILED,
            error=f"stage {unsafe} is not idempotent and its worker died while it ran: it may "
            "have done its work already, so it is not run again on its own; resume the run "
            "by hand if running it twice is safe",
        )
        return "failed"
    if not _may_auto_resume(runtime, execution_id):
        coordinator.finish(
            runtime,
            execution_id,
            status=ExecutionStatus.FAILED,
            error=f"lost its workers or live state {MAX_AUTO_RESUMES} times in a row "
            "without completing a stage",
        )
        return "failed"
    why = "stalled" if stalled else "lost its live state or workers"
    log.warning("execution %s %s; resuming from its checkpoints", execution_id, why)
    try:
        resume(runtime, execution_id, automatic=True)
    except OrchestratorError as exc:
        coordinator.finish(
            runtime, execution_id, status=ExecutionStatus.FAILED, error=f"could not resume: {exc}"
        )
        return "failed"
    return "stalled" if stalled else "resumed"


def _not_idempotent(
    runtime: Runtime, execution_id: str, records: Mapping[str, StageRecord]
) -> str | None:
    """A stage that was running when its worker died, of an action that declared itself not
    safe to run twice (``idempotent=False``: it sends e-mails, charges a card): the first one."""
    for stage_id in _lost_stages(runtime, execution_id, records):
        record = records[stage_id]
        if record.get("status") != StageStatus.RUNNING:
            continue  # waiting or retrying: the action did not run, or failed before
        try:
            action = runtime.registry.action(record["worker"], record["action"])
        except OrchestratorError:
            continue  # a worker type this process does not know: nothing to say about it
        if not action.idempotent:
            return stage_id
    return None


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
    runtime: Runtime, execution_id: str, records: Mapping[str, StageRecord]
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
            record.get("status") in {StageStatus.RETRYING, StageStatus.WAITING}
            and record.get("retry_at", overdue) < overdue
        )
    ]


def _unfinished(
    runtime: Runtime, state: RunState, execution_id: str, records: Mapping[str, StageRecord]
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


def _busy(runtime: Runtime, execution_id: str, records: Mapping[str, StageRecord]) -> bool:
    return any(
        record.get("status") == StageStatus.RUNNING
        and _slot_alive(runtime, record["worker"], f"{execution_id}:{stage_id}")
        for stage_id, record in records.items()
    )


def _stalled(
    runtime: Runtime,
    state: RunState,
    queues: QueueDepths,
    execution_id: str,
    records: Mapping[str, StageRecord],
) -> bool:
    """Nothing of the run moved for a lease period, no stage of it runs or waits to retry,
    and no message is queued for its next stages: their messages were lost (a worker died
    holding them unacknowledged, which the broker redelivers only after hours, or a launcher
    died before sending the canvas). A backlog is not a stall: if the next stages' queues
    hold messages or their worker types are at capacity, the run is only waiting its turn."""
    if any(r.get("status") not in STAGE_ENDED for r in records.values()):
        return False  # running, retrying or waiting for a slot: _lost_stages judges those
    meta = state.meta(execution_id)
    if meta.get("status") in RUN_HALTED or meta.get("launch") is None:
        return False
    plan = state.plan(execution_id)
    upcoming = {
        stage_id: spec
        for stage_id, spec in plan.items()
        if stage_id not in records
        and all(records.get(d, {}).get("status") in STAGE_ENDED for d in spec["depends_on"])
    }
    if not upcoming:
        return False
    if any(
        _slot_alive(runtime, spec["worker"], f"{execution_id}:{stage_id}")
        for stage_id, spec in upcoming.items()
    ):
        return False  # a stage took its slot and has not written its start yet: it runs
    moments = [meta.get("started_ms") or 0]
    for record in records.values():
        moments += [record.get("started_at") or 0, record.get("completed_at") or 0]
    if now_ms() - max(moments) < runtime.admission.lease_ttl_ms:
        return False
    for worker in {spec["worker"] for spec in upcoming.values()}:
        if queues.depth(worker) > 0 or queues.saturated(worker):
            return False
    return True


#: The depth assumed for a queue the broker could not report: enough not to call a run stalled.
UNKNOWN_DEPTH = 1


class QueueDepths:
    """Messages waiting in the broker per queue, and busy worker types, asked once a pass."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._depths: dict[str, int] = {}

    def depth(self, queue: str) -> int:
        if queue not in self._depths:
            self._depths[queue] = self._ask(queue)
        return self._depths[queue]

    def _ask(self, queue: str) -> int:
        try:
            with self.runtime.celery.connection_for_read() as connection:
                connection.ensure_connection(max_retries=2)  # a pooled one may predate a restart
                channel: Any = connection.default_channel
                return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError as exc:  # no such queue (nothing ever sent to it): nothing waits
            log.debug("queue %s: %s", queue, exc)
            return 0
        except Exception as exc:  # the broker did not answer: assume a backlog, not a stall
            log.warning("could not read the depth of queue %s: %s", queue, exc)
            return UNKNOWN_DEPTH

    def saturated(self, worker: str) -> bool:
        """Every capacity slot of the worker type is taken: a message may wait in a worker's
        prefetch buffer behind them."""
        limit = self.runtime.pool.workers.max_for(worker)
        active = self.runtime.redis.zcount(redis_key("slots", worker), now_ms(), "+inf")
        return bool(limit) and active >= limit


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

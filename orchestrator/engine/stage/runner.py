"""Runs one stage inside a worker process: inputs by reference in, a packet out.

The Celery task around it only decodes and retries; everything a stage does to the world
(Redis state, object storage, settlement, events) happens here, in this order:
read spec and upstream packets -> skip if the run stopped -> cache -> capacity slot ->
read inputs (checksums verified) -> call the function -> write output -> settle -> packet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from celery.exceptions import SoftTimeLimitExceeded
from redis.exceptions import NoScriptError

from orchestrator.constants import RUN_HALTED, STAGE_ENDED, LiveStatus, StageStatus, redis_key
from orchestrator.core.handshake import DataRef, HandshakePacket, NextStage, Summary
from orchestrator.core.retry import RetryPolicy, compute_backoff, retry_after_of, should_retry
from orchestrator.db import PipelineExecution
from orchestrator.engine.events import Event, stage_event
from orchestrator.engine.ledger import Usage, record_usages
from orchestrator.engine.metrics import stage_metrics
from orchestrator.engine.run_state import RunMeta, RunState, StageRecord, now_ms
from orchestrator.engine.stage.leases import LeaseKeeper
from orchestrator.engine.stage.sink import RunSink, remaining_ms
from orchestrator.errors import OrchestratorError, TransientStageError
from orchestrator.ops.tracing import annotate, traced
from orchestrator.runtime import Runtime
from orchestrator.sdk import Action, StageContext, StageResult

log = logging.getLogger(__name__)

#: How long a stage waits before asking again for a capacity slot of its worker type.
SLOT_RETRY_S = 0.5
#: What slot.lua answers: none free, the holder held it already, taken now.
SLOT_NONE, SLOT_HELD, SLOT_TAKEN = 0, 1, 2


@dataclass(frozen=True)
class Outcome:
    """How the attempt ended: its packet (also in the run's live state, where the next stage
    reads it) or, with ``retry_in``, when to try again (``waited``:
    for a capacity slot, which is no attempt); ``stale`` when the message belongs to no live
    launch of its run (its chain must stop)."""

    packet: dict[str, Any] | None
    retry_in: float | None = None
    stale: bool = False
    waited: bool = False


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@traced("stage", execution="execution_id", stage="stage_id", attempt="attempt")
def run_stage(
    runtime: Runtime,
    execution_id: str,
    stage_id: str,
    deps: list[str],
    *,
    worker: str,
    attempt: int,
    task_id: str | None,
    launch: str | None = None,
    rank: int | None = None,
) -> Outcome:
    """One attempt of a stage, in its span of the run's trace.

    The stage asks for its capacity slot in the round trip that reads its inputs (most
    stages run, so the second round trip is saved), ranked by its run's priority (``rank``,
    from its message): stages waiting for a slot go by priority and age. Every path that then
    does not run
    gives back a slot it took, and only one it took now (``SLOT_TAKEN``), never one the
    current launch of the same stage holds.
    """
    entered = time.perf_counter()
    state = RunState(runtime.redis)
    holder = f"{execution_id}:{stage_id}"
    try:
        spec, meta, upstream, record, extra = state.stage_inputs(
            execution_id,
            stage_id,
            deps,
            also=lambda pipe: runtime.admission.acquire_slot(
                worker, holder, client=pipe, rank=rank
            ),
        )
        slot = int(extra[0])
    except NoScriptError:  # Redis lost its script cache (a restart): load it, ask again
        taken = runtime.admission.acquire_slot(worker, holder, rank=rank)
        slot = SLOT_HELD if taken else SLOT_NONE
        spec, meta, upstream, record, _ = state.stage_inputs(execution_id, stage_id, deps)

    def stale(why: str) -> Outcome:
        log.warning("%s; stage %s of run %s dropped", why, stage_id, execution_id)
        if slot == SLOT_TAKEN:
            runtime.admission.release_slot(worker, holder)
        return Outcome(None, stale=True)

    if spec is None:  # the reconciler resumes the run
        return stale("no live plan (expired or Redis lost)")
    if launch is not None and meta.get("launch") != launch:
        # Redelivered from a launch the run was resumed past (a killed worker's message):
        # the current launch runs this stage itself.
        return stale("a message of an earlier launch")
    if spec["worker"] != worker:
        return stale(f"sent to worker type {worker}, planned for {spec['worker']}")
    if record.get("status") in {StageStatus.COMPLETED, StageStatus.CACHED, StageStatus.SKIPPED}:
        if slot == SLOT_TAKEN:
            runtime.admission.release_slot(worker, holder)
        return Outcome(state.packets(execution_id).get(stage_id))  # redelivered: already done
    annotate(worker_type=worker, action=spec["action"])
    stage = _Stage(runtime, state, execution_id, stage_id, spec, meta, attempt, task_id, slot)
    stage.lap("inputs", entered)
    stage.timing["entered_at"] = round(time.time() * 1000 - stage.timing["inputs"], 3)
    if meta.get("status") in RUN_HALTED:
        # Once the run's finish began, its final event is out: this stage adds no event after it.
        closed = meta.get("finishing") is not None
        return stage.finish_without_running(
            StageStatus.CANCELLED, "the run was stopped", quiet=closed
        )
    stopped_by = [d for d, p in upstream.items() if not p["summary"]["continue"]]
    if stopped_by:
        return stage.finish_without_running(
            StageStatus.SKIPPED, f"upstream {', '.join(stopped_by)} said continue: false"
        )
    refs = {d: DataRef.model_validate(upstream[d]["data_ref"]) for d in spec["depends_on"]}
    return stage.run(refs)


class _Stage:
    """One attempt of one stage; holds what the steps of ``run`` share."""

    def __init__(
        self,
        runtime: Runtime,
        state: RunState,
        execution_id: str,
        stage_id: str,
        spec: dict[str, Any],
        meta: RunMeta,
        attempt: int,
        task_id: str | None,
        slot: int,
    ) -> None:
        self.runtime = runtime
        self.state = state
        self.execution_id = execution_id
        self.stage_id = stage_id
        self.spec = spec
        self.meta = meta
        self.attempt = attempt
        self.task_id = task_id
        self.record: StageRecord = {
            "worker": spec["worker"],
            "action": spec["action"],
            "order": spec["order"],
            "attempts": attempt,
            "task_id": task_id,
        }
        #: Milliseconds per step of this attempt, kept in its record (``make bench`` reads
        #: them to show where a stage's time goes).
        self.timing: dict[str, float] = {}
        self._lapped = time.perf_counter()
        self.slot = slot
        #: The start is written once, by whoever comes first: the stage's end (in its own
        #: round trip) or the lease keeper's next tick while the stage still works.
        self._announce_lock = threading.Lock()
        self._announced = True  # until the stage takes its slot and starts
        self._start_event: Event = {}
        #: The stage's end round trip, whichever way it ends, filled as it goes (a small
        #: output's write first, then its record, packet and events).
        self.end = runtime.redis.pipeline(transaction=False)

    def lap(self, step: str, since: float | None = None) -> None:
        """Note how long ``step`` took: since ``since``, or since the last step."""
        now = time.perf_counter()
        self.timing[step] = round((now - (since if since is not None else self._lapped)) * 1000, 3)
        self._lapped = now

    def event(self, status: str, message: str = "", progress: float | None = None) -> Event:
        if progress is None:
            progress = 0.0 if status == StageStatus.RUNNING else 100.0
        remaining = remaining_ms(
            self.meta, self.stage_id, self.record.get("started_at"), done=status in STAGE_ENDED
        )
        return stage_event(self.stage_id, status, message, progress, remaining)

    def packet(self, ref: DataRef, summary: Summary) -> dict[str, Any]:
        nxt = self.spec.get("next") or {}
        return HandshakePacket(
            pipeline_id=self.execution_id,
            stage_id=self.stage_id,
            timestamp=datetime.now(UTC),
            data_ref=ref,
            summary=summary,
            next=NextStage(**nxt),
        ).to_wire()

    def finish_without_running(
        self, status: StageStatus, reason: str, *, quiet: bool = False
    ) -> Outcome:
        ref = DataRef.nothing()
        packet = self.packet(ref, Summary(proceed=False, errors=[reason]))
        self.record.update(
            {"status": status, "completed_at": now_ms(), "error": None, "reason": reason}
        )
        pipe = self.end
        if self.slot == SLOT_TAKEN:
            self.runtime.admission.release_slot(self.spec["worker"], self.holder, client=pipe)
        self.state.record(
            self.execution_id,
            self.stage_id,
            self.record,
            event=None if quiet else self.event(status, reason),
            packet=packet,
            pipe=pipe,
        )
        self._execute(pipe)
        return Outcome(packet)

    def _execute(self, pipe: Any) -> None:
        """Run a stage-end pipeline; if Redis lost free.lua (a restart), the plain ZREM queued
        before it freed the slot: load the script and count the busy time."""
        try:
            pipe.execute()
        except NoScriptError:
            self.runtime.admission.release_slot(self.spec["worker"], self.holder)

    def run(self, refs: dict[str, DataRef]) -> Outcome:
        """cache -> capacity slot -> inputs -> the function -> output -> settle -> packet."""
        action = self.runtime.registry.action(self.spec["worker"], self.spec["action"])
        input_sums = {d: r.checksum for d, r in refs.items()}
        cache_key = self._cache_key(action, input_sums)
        if cache_key is not None and (hit := self._cache_hit(cache_key)) is not None:
            return hit
        started = time.perf_counter()
        self.lap("cache")
        if self.slot == SLOT_NONE:
            return self._wait_for_slot()
        self._start()
        self.lap("slot")
        sink = RunSink(self.runtime, self.state, self.meta, before_event=self.announce)
        try:
            result, ref = self._call(action, refs, input_sums, sink)
        except SoftTimeLimitExceeded:
            timeout = TransientStageError(f"stage timed out after {self.spec['timeout_s']} s")
            return self._failed(timeout, started)
        except Exception as error:  # the stage's own failure: recorded, retried or failed
            return self._failed(error, started)
        return self._completed(result, ref, sink, cache_key, started)

    @property
    def holder(self) -> str:
        """Who holds the stage's capacity slot."""
        return f"{self.execution_id}:{self.stage_id}"

    def _cache_key(self, action: Action, input_sums: dict[str, str]) -> str | None:
        if not (self.spec["cache"]["enabled"] and action.cacheable):
            return None
        identity = (action.worker_type, action.name, action.version, self.spec["params"])
        return redis_key("cache", digest(*identity, input_sums, self._cache_owner()))

    def _start(self) -> None:
        """The stage holds its slot and starts; its running record and event are written
        later, by ``announce``, so a stage that ends at once pays no round trip for them."""
        self.record.update({"status": StageStatus.RUNNING, "started_at": now_ms()})
        self.meta.setdefault("_started_at", {})[self.stage_id] = now_ms()
        self._start_event = self.event(StageStatus.RUNNING, "started", 0.0)
        self._announced = False

    def announce(self) -> None:
        """Write the start now (once), while the stage still works. The write holds the
        lock, so a stage end that comes meanwhile waits and writes its record after it."""
        with self._announce_lock:
            if self._announced:
                return
            self._announced = True
            running = cast(StageRecord, {**self.record, "status": StageStatus.RUNNING})
            self.state.record(self.execution_id, self.stage_id, running, event=self._start_event)

    def _take_start(self) -> Event | None:
        """The start event if nobody wrote it yet (the stage's end writes it with its own,
        where only the event is needed: the record that follows replaces the running one)."""
        with self._announce_lock:  # an announce being written finishes first
            if self._announced:
                return None
            self._announced = True
            return self._start_event

    def _wait_for_slot(self) -> Outcome:
        # retry_at tells the reconciler when a waiting stage is overdue (its worker died).
        due = now_ms() + int(SLOT_RETRY_S * 1000)
        self.record.update({"status": StageStatus.WAITING, "started_at": None, "retry_at": due})
        waiting = self.event(StageStatus.WAITING, "waiting for a capacity slot", 0.0)
        self.state.record(self.execution_id, self.stage_id, self.record, event=waiting)
        return Outcome(None, retry_in=SLOT_RETRY_S, waited=True)

    def _call(
        self, action: Action, refs: dict[str, DataRef], input_sums: dict[str, str], sink: RunSink
    ) -> tuple[StageResult, DataRef]:
        """Inputs by reference in (checksums verified), the function, its output written,
        with the stage's leases kept alive throughout."""
        keeper = LeaseKeeper(
            self.runtime, self.spec["worker"], self.holder, self.execution_id, self.announce
        )
        with keeper:
            inputs = self.runtime.outputs.read_many(refs)
            self.lap("read")
            moved = stage_metrics().handshake_bytes
            moved.labels(action.worker_type, "read").inc(sum(r.size_bytes for r in refs.values()))
            ctx = StageContext(
                execution_id=self.execution_id,
                stage_id=self.stage_id,
                worker_type=action.worker_type,
                action=action.name,
                settings=self.runtime.settings,
                sink=sink,
                attempt=self.attempt,
            )
            result = action.function(ctx, inputs, self.spec["params"])
            self.lap("function")
            if not isinstance(result, StageResult):
                result = StageResult(output=result)
            params = self.spec["params"]
            stem = f"outputs/{self.execution_id}/{self.stage_id}/{digest(params, input_sums)[:16]}"
            ttl = timedelta(seconds=self.runtime.settings.output_ttl_s)
            # A small output's write joins the stage's end: one round trip with its packet.
            ref = self.runtime.outputs.write(stem, result.output, ttl=ttl, pipe=self.end)
        self.lap("write")
        annotate(bytes_read=sum(r.size_bytes for r in refs.values()), bytes_written=ref.size_bytes)
        moved.labels(action.worker_type, "written").inc(ref.size_bytes)
        return result, ref

    def _completed(
        self,
        result: StageResult,
        ref: DataRef,
        sink: RunSink,
        cache_key: str | None,
        started: float,
    ) -> Outcome:
        """Settle, cache, record: the slot is released in the same round trip."""
        items = result.items_processed
        summary = Summary(
            items_processed=items if items is not None else _count_items(result.output),
            quality_score=result.quality_score if result.quality_score is not None else 1.0,
            errors=result.errors[:20],
            proceed=result.proceed,
        )
        cost = self._settle(sink.used)
        packet = self.packet(ref, summary)
        pipe = self.end  # holds the output's write already, if it is small
        if cache_key is not None:
            cached = {
                "data_ref": ref.model_dump(mode="json"),
                "summary": summary.model_dump(mode="json", by_alias=True),
            }
            pipe.set(cache_key, json.dumps(cached), ex=int(self.spec["cache"]["ttl_s"]))
        self.lap("settle")
        self.timing["done_at"] = round(time.time() * 1000, 3)  # the hop to the next stage starts
        self.record.update(
            {
                "status": StageStatus.COMPLETED,
                "completed_at": now_ms(),
                "time_ms": int((time.perf_counter() - started) * 1000),
                "cost_usd": cost,
                "usage": dict(sink.used),
                "cache_hit": False,
                "error": None,
                "proceed": result.proceed,
                "timing": self.timing,
            }
        )
        self._observe("completed", started)
        message = "done" if result.proceed else "done; continue: false stops what follows"
        self.runtime.admission.release_slot(self.spec["worker"], self.holder, client=pipe)
        self.state.record(
            self.execution_id,
            self.stage_id,
            self.record,
            event=self.event(StageStatus.COMPLETED, message),
            packet=packet,
            pipe=pipe,
            earlier=self._take_start(),
        )
        self._execute(pipe)
        return Outcome(packet)

    def _cache_owner(self) -> list[str | None]:
        """Whose results a cache hit may return: by default only this run's client's (another
        client's output, and its run id in the storage key, would leak); everyone's when the
        template says ``cache: {shared: true}``."""
        if self.spec["cache"].get("shared"):
            return ["shared"]
        if "client_id" in self.meta:
            return ["client", self.meta["client_id"]]
        # Runs launched before the meta carried it: one primary-key read, cached stages only.
        with self.runtime.db.session() as session:
            execution = session.get(PipelineExecution, self.execution_id)
            return ["client", execution.client_id if execution is not None else None]

    def _cache_hit(self, cache_key: str) -> Outcome | None:
        raw = self.runtime.redis.get(cache_key)
        if raw is None:
            return None
        cached = json.loads(raw)
        ref = DataRef.model_validate(cached["data_ref"])
        if not self.runtime.outputs.available(ref):
            return None
        packet = self.packet(ref, Summary.model_validate(cached["summary"]))
        self.record.update(
            {
                "status": StageStatus.CACHED,
                "started_at": now_ms(),
                "completed_at": now_ms(),
                "time_ms": 0,
                "cost_usd": 0.0,
                "usage": {},
                "cache_hit": True,
                "error": None,
            }
        )
        pipe = self.end
        if self.slot == SLOT_TAKEN:
            self.runtime.admission.release_slot(self.spec["worker"], self.holder, client=pipe)
        self.state.record(
            self.execution_id,
            self.stage_id,
            self.record,
            event=self.event(StageStatus.CACHED, "result cache hit: skipped, no cost"),
            packet=packet,
            pipe=pipe,
        )
        self._execute(pipe)
        stage_metrics().cache_hits.labels(self.spec["worker"], self.spec["action"]).inc()
        return Outcome(packet)

    def _settle(self, used: dict[str, float]) -> float:
        """Record actual usage and refund what the reservation held beyond it.

        The ledger first: it is the record of what was spent (quota counters are rebuilt
        from it after a Redis restart), so a stage run again after its first settlement
        counts nothing a second time, even when Redis forgot that settlement.
        """
        reserved: dict[str, float] = self.spec.get("resources") or {}
        metrics = stage_metrics()
        usages = []
        for resource, actual in sorted(used.items()):
            if actual:
                price = self.runtime.pool.price(resource)
                metrics.units.labels(resource, self.spec["worker"]).inc(actual)
                metrics.cost.labels(resource, self.spec["worker"]).inc(actual * price)
                usages.append(
                    Usage(
                        execution_id=self.execution_id,
                        stage_id=f"{self.execution_id}.{self.stage_id}",
                        resource=resource,
                        quantity=actual,
                        cost_usd=actual * price,
                        idempotency_key=self._usage_key(resource),
                    )
                )
        first = record_usages(self.runtime.db, usages)  # one statement for all of them
        for resource in sorted(set(reserved) | set(used)):
            actual = used.get(resource, 0.0) if self._usage_key(resource) in first else 0.0
            self.runtime.admission.settle(
                self.execution_id, self.stage_id, resource, reserved.get(resource, 0.0), actual
            )
        return round(sum(u.cost_usd for u in usages), 10)

    def _usage_key(self, resource: str) -> str:
        """The ledger's key of this stage's use of ``resource``: the same on every attempt."""
        return f"{self.execution_id}:{self.stage_id}:{resource}"

    def _observe(self, outcome: str, started: float) -> None:
        """One attempt's duration by worker type, action and outcome (in-process, no I/O)."""
        labels = (self.spec["worker"], self.spec["action"], outcome)
        stage_metrics().duration.labels(*labels).observe(time.perf_counter() - started)

    def _failed(self, error: BaseException, started: float) -> Outcome:
        self.announce()  # its start first, as every attempt's events go
        self.runtime.admission.release_slot(self.spec["worker"], self.holder)
        message = (
            error.message
            if isinstance(error, OrchestratorError)
            else f"{type(error).__name__}: {error}"
        )
        policy = RetryPolicy(**self.spec["retry"])
        elapsed = int((time.perf_counter() - started) * 1000)
        if should_retry(policy, self.attempt, error):
            delay = compute_backoff(policy, self.attempt, retry_after_s=retry_after_of(error))
            self._observe("retried", started)
            stage_metrics().retries.labels(self.spec["worker"], self.spec["action"]).inc()
            self.record.update(
                {
                    "status": StageStatus.RETRYING,
                    "error": message,
                    "time_ms": elapsed,
                    "retry_at": now_ms() + int(delay * 1000),
                }
            )
            self.state.record(
                self.execution_id,
                self.stage_id,
                self.record,
                event=self.event(
                    StageStatus.RETRYING,
                    f"attempt {self.attempt} failed ({message}); retrying in {delay:.1f} s",
                    0.0,
                ),
            )
            return Outcome(None, retry_in=delay)
        self._observe("failed", started)
        log.warning("stage %s of %s failed: %s", self.stage_id, self.execution_id, message)
        self.state.set_meta(
            self.execution_id, status=LiveStatus.FAILING, error=f"{self.stage_id}: {message}"
        )
        ref = DataRef.nothing()
        packet = self.packet(ref, Summary(proceed=False, errors=[message[:500]]))
        self.record.update(
            {
                "status": StageStatus.FAILED,
                "completed_at": now_ms(),
                "time_ms": elapsed,
                "error": message,
            }
        )
        self.state.record(
            self.execution_id,
            self.stage_id,
            self.record,
            event=self.event(StageStatus.FAILED, message),
            packet=packet,
        )
        return Outcome(packet)


def _count_items(output: Any) -> int:
    if isinstance(output, list):
        return len(output)
    if isinstance(output, dict):
        for key in ("items", "articles", "results", "feeds"):
            if isinstance(output.get(key), list):
                return len(output[key])
    return 1 if output is not None else 0

"""The engine's ``StageSink``: what a stage function reports goes to the world from here.

Progress becomes an event on the run's stream, usage is kept for settlement, deliverables
go to object storage, cooldowns and rate waits go through admission (Redis, every process).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from orchestrator.core.estimator import remaining_ms as critical_remaining_ms
from orchestrator.engine.events import progress_event
from orchestrator.engine.run_state import RunMeta, RunState, now_ms
from orchestrator.runtime import Runtime
from orchestrator.sdk import StageContext
from orchestrator.storage.deliverables import record_deliverable


def remaining_ms(
    meta: RunMeta, stage: str | None = None, since_ms: int | None = None, done: bool = False
) -> int | None:
    """Estimated time left, recomputed from what has ended and what is left: the critical
    path of the stages not ended at their predicted medians (``stage`` has run since
    ``since_ms``, or is ``done``). A run launched without them: its estimate less elapsed."""
    p50, deps = meta.get("stage_p50"), meta.get("deps")
    if p50 and deps:
        ended = set(meta.get("_ended", ()))
        running: dict[str, float] = {}
        if stage is not None and done:
            ended.add(stage)
        elif stage is not None and since_ms is not None:
            running[stage] = now_ms() - since_ms
        return critical_remaining_ms(deps, p50, ended, running)
    total, started = meta.get("estimated_time_ms"), meta.get("started_ms")
    if total is None or started is None:
        return None
    return max(0, int(total) - (now_ms() - int(started)))


class RunSink:
    """The real ``StageSink``: progress to the event stream, usage kept for settlement."""

    def __init__(
        self,
        runtime: Runtime,
        state: RunState,
        meta: RunMeta,
        before_event: Callable[[], None] = lambda: None,
    ) -> None:
        self.runtime = runtime
        self.state = state
        self.meta = meta
        self.used: dict[str, float] = defaultdict(float)
        #: Writes the stage's deferred start, which must come before its first progress.
        self.before_event = before_event

    def progress(self, ctx: StageContext, percent: float, message: str) -> None:
        self.before_event()
        started = self.meta.get("_started_at", {}).get(ctx.stage_id)
        remaining = remaining_ms(self.meta, ctx.stage_id, started)
        self.state.publish(
            ctx.execution_id,
            progress_event(ctx.stage_id, percent, message, remaining),
            by_stage=True,
        )

    def usage(self, ctx: StageContext, resource: str, quantity: float) -> None:
        self.used[resource] += quantity

    def deliver(self, ctx: StageContext, name: str, data: bytes, content_type: str) -> str:
        return record_deliverable(
            self.runtime, ctx.execution_id, ctx.stage_id, name, data, content_type
        )

    def cooldown(self, ctx: StageContext, resource: str, seconds: float) -> None:
        self.runtime.admission.cooldown(resource, seconds)

    def throttle(self, ctx: StageContext, resource: str, units: float) -> float:
        admission = self.runtime.admission
        waited = 0.0
        while True:
            pause = admission.cooldown_remaining(resource) or admission.acquire_rate(
                resource, units
            )
            if pause <= 0:
                return waited
            if pause >= 1:
                self.progress(ctx, 0.0, f"waiting {pause:.0f} s for the {resource} rate limit")
            time.sleep(pause)
            waited += pause

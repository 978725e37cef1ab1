"""The engine's ``StageSink``: what a stage function reports goes to the world from here.

Progress becomes an event on the run's stream, usage is kept for settlement, deliverables
go to object storage, cooldowns and rate waits go through admission (Redis, every process).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from orchestrator.run_state import RunState, now_ms
from orchestrator.runtime import Runtime
from orchestrator.sdk import StageContext


def remaining_ms(meta: dict[str, Any]) -> int | None:
    """Estimated time left: the run's estimate minus what has elapsed (never negative)."""
    total, started = meta.get("estimated_time_ms"), meta.get("started_ms")
    if total is None or started is None:
        return None
    return max(0, int(total) - (now_ms() - int(started)))


class RunSink:
    """The real ``StageSink``: progress to the event stream, usage kept for settlement."""

    def __init__(self, runtime: Runtime, state: RunState, meta: dict[str, Any]) -> None:
        self.runtime = runtime
        self.state = state
        self.meta = meta
        self.used: dict[str, float] = defaultdict(float)

    def progress(self, ctx: StageContext, percent: float, message: str) -> None:
        self.state.publish(
            ctx.execution_id,
            {
                "type": "progress",
                "stage": ctx.stage_id,
                "progress": round(percent, 1),
                "message": message,
                "estimated_remaining_ms": remaining_ms(self.meta),
            },
        )

    def usage(self, ctx: StageContext, resource: str, quantity: float) -> None:
        self.used[resource] += quantity

    def deliver(self, ctx: StageContext, name: str, data: bytes, content_type: str) -> str:
        from orchestrator.deliverables import record_deliverable

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

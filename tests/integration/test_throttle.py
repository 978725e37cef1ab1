"""``ctx.throttle``: a stage waits for the per-minute rate every process shares, and for a
cooldown another process set, through the engine's real sink on real Redis."""

from __future__ import annotations

from pathlib import Path

import redis

from orchestrator.engine import events
from orchestrator.engine.run_state import RunState
from orchestrator.engine.stage.sink import RunSink
from orchestrator.runtime import Runtime
from orchestrator.sdk import StageContext
from orchestrator.settings import Settings

POOL = "resources:\n  calls: {rate_limit_per_minute: 120}\n"


def stage(settings: Settings, tmp_path: Path) -> tuple[StageContext, Runtime]:
    resources = tmp_path / "resources.yaml"
    resources.write_text(POOL)
    runtime = Runtime(settings.with_overrides(resources_file=resources))
    sink = RunSink(runtime, RunState(runtime.redis), {})
    ctx = StageContext("exec-throttle", "s1", "echo", "say", runtime.settings, sink)
    return ctx, runtime


def test_throttle_paces_calls_beyond_the_burst(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ctx, runtime = stage(settings, tmp_path)
    # GCRA at 120/minute: a burst of 120 goes at once, then one call every 0.5 s.
    burst = [ctx.throttle("calls") for _ in range(120)]
    assert burst == [0.0] * 120
    paced = [ctx.throttle("calls") for _ in range(3)]
    assert all(waited > 0 for waited in paced), paced
    assert sum(paced) >= 1.0, paced
    assert runtime.admission.acquire_rate("calls") > 0  # still at the limit for everyone
    assert ctx.throttle("unmetered") == 0.0  # a resource without a rate never waits
    runtime.close()


def test_throttle_waits_out_a_cooldown_and_says_so(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ctx, runtime = stage(settings, tmp_path)
    runtime.admission.cooldown("calls", 1.5)  # another process got a 429 with Retry-After
    waited = ctx.throttle("calls")
    assert waited >= 1.0
    assert runtime.admission.cooldown_remaining("calls") == 0
    messages = [e["message"] for _, e in events.read(runtime.redis, "exec-throttle")]
    assert any("calls rate limit" in m for m in messages), messages
    runtime.close()

"""The burst benchmark's worker type: ``bench_nap`` sleeps ``seconds`` and returns.

Unlike the test types of ``workers.testing`` it is not ``internal``: the load ramp runs the
real ``orchestrator workers --autoscale``, which starts and sizes the deployed types only.
It is loaded only where named (``ORCH_WORKER_MODULES=workers,bench.burst_workers``), so no
production app ever has it. It reports no progress: its stage costs the engine the least a
stage can, and the bare Celery baseline (bench/bare_app.py) calls the very same function.
"""

from __future__ import annotations

import time
from typing import Any

from orchestrator.sdk import StageContext, WorkerType

napper = WorkerType("bench_nap", capabilities=["sleep"])


@napper.action("nap")
def nap(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``seconds`` (an I/O-bound stage: an LLM or HTTP call, minus the call)."""
    seconds = float(params.get("seconds", 0.1))
    time.sleep(seconds)
    return {"slept": seconds, "inputs": sorted(inputs)}

"""Worker types for tests and benchmarks: small, predictable, and not deployed.

``echo`` returns its params, ``sum`` adds numbers from its inputs, ``fail`` fails (permanently
or a given number of times, or unless told ``ok``), ``sleep`` sleeps with progress (and may
report metered usage), ``big`` outputs N megabytes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from orchestrator.errors import StageFailed, TransientStageError
from orchestrator.sdk import StageContext, StageResult, WorkerType

echo = WorkerType("echo", internal=True)
summer = WorkerType("sum", internal=True)
failer = WorkerType("fail", internal=True)
sleeper = WorkerType("sleep", internal=True)
big = WorkerType("big", internal=True)


@echo.action("say")
def say(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> Any:
    """Return the params and what came in; ``proceed: false`` stops what follows."""
    for resource, quantity in params.get("use", {}).items():
        ctx.usage(resource, quantity)
    if params.get("deliver"):
        ctx.deliver("report.md", f"# Report of {ctx.stage_id}\n".encode(), "text/markdown")
    output = {"stage": ctx.stage_id, "params": params, "inputs": sorted(inputs)}
    return StageResult(output=output, proceed=params.get("proceed", True))


@echo.action("noop")
def noop(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> None:
    """Nothing at all: for measuring the engine's own overhead."""
    return None


@summer.action("add")
def add(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, int]:
    """``value`` plus the ``total`` of every upstream output."""
    total = int(params.get("value", 0)) + sum(int(v.get("total", 0)) for v in inputs.values())
    return {"total": total}


@failer.action("boom")
def boom(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> Any:
    """Fail permanently, or transiently for the first ``transient_failures`` attempts."""
    if ctx.attempt <= int(params.get("transient_failures", 0)):
        raise TransientStageError(f"transient failure on attempt {ctx.attempt}")
    if params.get("transient_failures") is not None:
        return {"succeeded_on_attempt": ctx.attempt}
    raise StageFailed(params.get("message", "this stage always fails"))


@failer.action("unless")
def unless(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> Any:
    """Fail permanently unless ``ok`` is true: a failure that new parameters fix."""
    if not params.get("ok"):
        raise StageFailed(params.get("message", "not ok"))
    return {"total": int(params.get("value", 0)), "inputs": sorted(inputs)}


@sleeper.action("nap")
def nap(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``seconds`` in ``steps`` steps, reporting progress after each (and ``use``)."""
    seconds, steps = float(params.get("seconds", 1)), int(params.get("steps", 4))
    for resource, quantity in params.get("use", {}).items():
        ctx.usage(resource, quantity)
    for step in range(steps):
        time.sleep(seconds / steps)
        ctx.progress(100 * (step + 1) / steps, f"step {step + 1} of {steps}")
    return {"slept": seconds, "inputs": sorted(inputs)}


@sleeper.action("nap_once", idempotent=False)
def nap_once(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``nap``, declared unsafe to run twice (as a stage that sends e-mails would be)."""
    return nap(ctx, inputs, params)


@big.action("blob")
def blob(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> bytes:
    """``megabytes`` of random bytes (and checks that upstream blobs arrived whole)."""
    for name, data in inputs.items():
        if isinstance(data, bytes) and len(data) != int(params.get("megabytes", 1)) * 2**20:
            raise StageFailed(f"input {name} has {len(data)} bytes")
    return os.urandom(int(params.get("megabytes", 1)) * 2**20)

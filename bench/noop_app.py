"""The product's Celery app plus bare no-op tasks, so both run on the very same workers."""

from __future__ import annotations

import json
import time
from typing import Any

from orchestrator.celery_app import create_celery_app
from orchestrator.settings import Settings

app = create_celery_app(Settings.from_env())
#: Where ``stamp`` tasks note their bodies' start and end.
STAMPS_KEY = "bench:stamps"


@app.task(name="bench.noop", queue="echo")
def noop(upstream: object = None) -> None:
    """A bare Celery task: the baseline the engine's per-stage overhead is measured against."""
    return None


@app.task(name="bench.noop_kw", queue="echo")
def noop_kw(upstream: object = None, **kwargs: object) -> None:
    """A bare task that takes a stage's kwargs: its signature is shaped like a stage's."""
    return None


@app.task(name="bench.stamp", queue="echo")
def stamp(upstream: object = None, **kwargs: object) -> None:
    """A lean task that notes when its body began and ended: the bare chain's hop, measured
    as the engine's is (the next body's start less the previous body's end)."""
    began = time.time()
    runtime = app.conf.orchestrator_runtime
    runtime.redis.rpush(STAMPS_KEY, f"{began:.6f} {time.time():.6f}")


#: What a ``floor`` task writes at its end: a real stage's record, packet and events, copied
#: from a measured run by the benchmark, read once per process.
FLOOR_KEY = "bench:floor_payload"
_floor_payload: list[Any] = []


@app.task(name="bench.floor", queue="echo")
def floor(
    upstream: object = None,
    *,
    execution_id: str,
    stage_id: str,
    deps: list[str],
    launch: str | None = None,
) -> None:
    """The floor of a stage under the engine's contract: only the two round trips every
    stage must make, as the engine makes them (its inputs and capacity slot before it runs;
    its slot release, record, packet and events before its successor may start), on a
    scratch copy of a real run, and nothing else: no validation, no estimate, no metrics."""
    from orchestrator.engine.run_state import RunState

    runtime = app.conf.orchestrator_runtime
    state = RunState(runtime.redis)
    holder = f"{execution_id}:{stage_id}"
    acquire = runtime.admission.acquire_slot
    state.stage_inputs(
        execution_id, stage_id, deps, also=lambda pipe: acquire("echo", holder, client=pipe)
    )
    if not _floor_payload:
        _floor_payload.extend(json.loads(runtime.redis.get(FLOOR_KEY)))
    record, packet, start, end = _floor_payload
    pipe = runtime.redis.pipeline(transaction=False)
    runtime.admission.release_slot("echo", holder, client=pipe)
    state.record(execution_id, stage_id, record, event=end, packet=packet, pipe=pipe, earlier=start)
    pipe.execute()

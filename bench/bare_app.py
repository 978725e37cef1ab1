"""Bare Celery running the same stage functions as the engine, in the same canvas shape.

The burst benchmark's baseline: one task, ``bare.stage``, on one queue per worker type
(``bare.<type>``, served at the engine's concurrency), calls the registered function of the
stage with the SDK's recording sink: no admission, no live state, no object storage, no
events, no checkpoints. Outputs travel through the broker as Celery users ship them: each
task returns every output so far (a stage may read any ancestor, as the report does), and
a group's results are merged by the task after it. ``canvas`` turns a bound template into
chains and groups with ``core.planner``, the engine's own planner. Celery's defaults
otherwise, as bench/default_app.py (JSON: the reference workers' outputs are JSON values).

A root stage notes its run's first start and the last stage the run's end in two Redis
sorted sets, and every stage the time its function took, so the benchmark reads
submit-to-first-stage, completions and stage times as it does the engine's from its rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery, chain, group
from celery.canvas import Signature

from orchestrator.core.planner import Node, Parallel, Series, Step, plan
from orchestrator.core.templates import BoundStage
from orchestrator.sdk import StageContext, load_worker_modules
from orchestrator.sdk.testing import RecordingSink, output_of
from orchestrator.settings import Settings

#: Sorted sets of run id -> epoch seconds: a run's first stage started, its last one ended.
STARTED_KEY, DONE_KEY = "bare:started", "bare:done"
#: Lists (one per worker type) of the seconds each stage function took.
TIMES_KEY = "bare:times:"

app = Celery("bare", broker=os.environ["ORCH_BROKER_URL"], backend=os.environ["ORCH_REDIS_URL"])
app.conf.task_default_queue = "bare"  # Celery's defaults otherwise (JSON, prefetch 4)

#: The stage functions are imported here, in the worker's main process before it forks its
#: pool, as the engine's app does (``create_celery_app``): no child pays the import.
SETTINGS = Settings.from_env()
REGISTRY = load_worker_modules(SETTINGS.worker_modules)

_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    """This pool process's Redis client, made on first use (after the fork)."""
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(SETTINGS.redis_url)
    return _redis


def _merge(previous: Any) -> dict[str, Any]:
    """Every output so far, from one parent's dict or a group's list of them."""
    if previous is None:
        return {}
    if isinstance(previous, dict):
        return previous
    merged: dict[str, Any] = {}
    for part in previous:
        merged.update(_merge(part))
    return merged


@app.task(name="bare.stage")
def stage(
    previous: Any = None,
    *,
    run: str,
    spec: dict[str, Any],
    first: bool = False,
    last: bool = False,
) -> dict[str, Any]:
    """Run one stage's function on its upstream outputs; return every output so far."""
    client = _client()
    if first:
        client.zadd(STARTED_KEY, {run: time.time()}, nx=True)
    outputs = _merge(previous)
    action = REGISTRY.action(spec["worker"], spec["action"])
    ctx = StageContext(
        execution_id=run,
        stage_id=spec["id"],
        worker_type=spec["worker"],
        action=spec["action"],
        settings=SETTINGS,
        sink=RecordingSink(),
    )
    inputs = {name: outputs[name] for name in spec["depends_on"]}
    began = time.perf_counter()
    result = action.function(ctx, inputs, spec["params"])
    client.rpush(f"{TIMES_KEY}{spec['worker']}", time.perf_counter() - began)
    merged = {**outputs, spec["id"]: output_of(result)}
    if last:
        client.zadd(DONE_KEY, {run: time.time()})
        return {}
    return merged


def canvas(run: str, stages: Iterable[BoundStage]) -> Signature:
    """The run's chains and groups: the engine's plan of the same stages, task for task."""
    specs: dict[str, dict[str, Any]] = {
        s.id: {
            "id": s.id,
            "worker": s.worker,
            "action": s.action,
            "depends_on": list(s.depends_on),
            "params": s.params,
        }
        for s in stages
    }
    shape = plan({stage_id: spec["depends_on"] for stage_id, spec in specs.items()})
    roots = {stage_id for stage_id, spec in specs.items() if not spec["depends_on"]}
    ends = set(specs) - {d for spec in specs.values() for d in spec["depends_on"]}
    if len(ends) != 1:
        raise ValueError(f"one last stage expected, found {sorted(ends)}")

    def build(node: Node) -> Signature:
        if isinstance(node, Step):
            spec = specs[node.stage]
            return stage.s(
                run=run, spec=spec, first=node.stage in roots, last=node.stage in ends
            ).set(queue=f"bare.{spec['worker']}")
        parts = [build(part) for part in node.parts]
        if isinstance(node, Series):
            return chain(*parts)
        assert isinstance(node, Parallel)
        return group(*parts)

    return build(shape.root)

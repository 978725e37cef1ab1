"""The estimator's adapter: what it learns from the database, where the fit is kept, how
good its estimates were.

``refit`` (the beat schedule, every 30 s; a few thousand rows per action, well under a
second) reads finished stages, their features and the ``resource_usage`` ledger, fits the
models of ``core.predictor`` and stores them as JSON in Redis. An estimate reads that fit
(one small GET to see whether it changed) and never waits for a refit: with no fit yet it
starts from the template's hints, and asks the coordinator for a refit.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from orchestrator.constants import ExecutionStatus, StageStatus, redis_key
from orchestrator.core import predictor
from orchestrator.core.estimator import (
    ActionModels,
    Coverage,
    Estimate,
    Knowledge,
    estimate,
    overhead_features,
    stage_features,
)
from orchestrator.core.quota import run_needs
from orchestrator.core.templates import BoundStage
from orchestrator.db import PipelineExecution, ResourceUsage, StageExecution
from orchestrator.runtime import Runtime
from orchestrator.template_registry import prepare

log = logging.getLogger(__name__)

KNOWLEDGE_KEY = redis_key("estimator", "knowledge")
VERSION_KEY = redis_key("estimator", "version")
REFIT_LOCK = redis_key("estimator", "refitting")
#: Rows per worker type and action a fit reads (the most recent).
ROWS_PER_ACTION = 2000
#: Finished runs the overhead and the stated confidence are measured on.
RECENT_RUNS = 200
#: A fit older than this is refreshed (in the background) when an estimate reads it.
STALE_AFTER_S = 30.0
#: Residuals kept per model: enough quantile points to draw from, small enough to ship.
KEPT_RESIDUALS = 200

_cache: dict[str, tuple[str, Knowledge]] = {}


# -- reading the fit ---------------------------------------------------------------------------


def knowledge(runtime: Runtime) -> Knowledge:
    """The latest fit (cached per process until its version changes); never waits for one."""
    version = _text(runtime.redis.get(VERSION_KEY))
    cached = _cache.get(runtime.settings.redis_url)
    if version is None:
        _request_refit(runtime)
        return Knowledge()
    if cached is None or cached[0] != version:
        raw = runtime.redis.get(KNOWLEDGE_KEY)
        cached = (version, Knowledge.from_json(json.loads(raw)) if raw else Knowledge())
        _cache[runtime.settings.redis_url] = cached
    if time.time() * 1000 - cached[1].fitted_at_ms > STALE_AFTER_S * 1000:
        _request_refit(runtime)
    return cached[1]


def _request_refit(runtime: Runtime) -> None:
    """Ask the coordinator for a refit unless one was asked for lately."""
    if runtime.redis.set(REFIT_LOCK, "1", nx=True, ex=int(STALE_AFTER_S)):
        runtime.celery.send_task("coordinator.refit_estimates")


def cost_and_time(runtime: Runtime, stages: list[BoundStage]) -> Estimate:
    """The estimate of bound stages from the latest fit, prices and what this process's runs
    can use: cheap enough for every submission to record."""
    return estimate(
        stages,
        knowledge(runtime),
        prices=runtime.pool.prices(),
        unusable=runtime.unusable,
        needs=runtime.pool.needs(),
    )


def estimate_run(
    runtime: Runtime, template_name: str, parameters: dict[str, Any]
) -> dict[str, Any]:
    """Feasibility, time quantiles, cost, confidence and a per-stage breakdown (with the
    method each stage will use), before anything runs."""
    _template, stages = prepare(runtime, template_name, parameters)
    needs = run_needs(stages, runtime.unusable)
    snapshot = runtime.admission.snapshot()
    reasons, availability = _availability(runtime, needs.quotas, needs.workers, snapshot)
    result = estimate_now(runtime, stages, snapshot["leases"], snapshot["pending_runs"])
    return {
        "feasible": not reasons,
        **result.as_dict(),
        "resource_availability": availability,
        "reasons": reasons,
    }


def _availability(
    runtime: Runtime,
    quotas: dict[str, float],
    workers: dict[str, int],
    snapshot: dict[str, Any],
) -> tuple[list[str], dict[str, Any]]:
    reasons: list[str] = []
    availability: dict[str, Any] = {}
    for resource in sorted(runtime.unusable):
        availability[resource] = f"not used: needs {runtime.pool.needs()[resource]}"
    for resource, needed in quotas.items():
        state = snapshot["resources"].get(resource)
        if state is None:
            availability[resource] = "unlimited"
            continue
        left = [
            limit - state[used] - state["reserved"]
            for used, limit in (
                ("used_today", state["daily_limit"]),
                ("used_this_month", state["monthly_limit"]),
            )
            if limit
        ]
        free = min(left) if left else None
        if state["cooldown_s"]:
            reasons.append(f"{resource} is cooling down for {state['cooldown_s']:.0f} s")
        if free is not None and needed > free:
            reasons.append(f"{resource}: needs {needed:g}, {max(0, free):g} available now")
        availability[resource] = (
            "available" if free is None or needed <= free else f"short by {needed - free:g}"
        )
    for worker in workers:
        capacity = snapshot["worker_capacity"].get(worker) or {
            "max": runtime.pool.workers.max_for(worker),
            "active": 0,
        }
        availability[f"workers.{worker}"] = (
            f"{capacity['max'] - capacity['active']}/{capacity['max']} available"
        )
        if capacity["max"] == 0:
            reasons.append(f"worker type {worker} has no capacity")
    return reasons, availability


def estimate_now(
    runtime: Runtime, stages: list[BoundStage], running: int, waiting: int
) -> Estimate:
    """The estimate with the wait behind the runs queued now: they go first, served about as
    many at a time as run now."""
    alone = cost_and_time(runtime, stages)
    return alone.after_wait(waiting * alone.time.p50 / max(1, running)) if waiting else alone


def recorded(result: Estimate, running: int, waiting: int) -> dict[str, Any]:
    """What a run keeps of its estimate, to be judged by when it ends, and the load it was
    made under (the engine's own overhead is learned from runs that had the machine alone)."""
    body = result.as_dict()
    return {
        "time_ms": body["time_ms"],
        "cost_usd": body["cost_usd"],
        "stages": {s.stage: s.time.as_dict() for s in result.breakdown},
        "backlog": {"running": running, "waiting": waiting},
    }


def features_of(runtime: Runtime, stage: BoundStage) -> dict[str, Any]:
    """A stage's features as recorded at submission (its upstream stages too, for training)."""
    return {**stage_features(stage, runtime.unusable, None), "_deps": list(stage.depends_on)}


# -- fitting -------------------------------------------------------------------------------


def refit(runtime: Runtime) -> Knowledge:
    """Fit every model on recent history and publish it; returns what was fitted."""
    started = time.perf_counter()
    stages = _finished_stages(runtime)
    units = _units(runtime, [row for rows in stages.values() for row in rows])
    items = {
        (row.execution_id, row.stage_name): _items(row) for rows in stages.values() for row in rows
    }
    actions = {key: _fit_action(rows, units, items) for key, rows in stages.items() if rows}
    runs = _recent_runs(runtime)
    fitted = Knowledge(
        actions=actions,
        overhead=predictor.fit(list(_overheads(runtime, runs))),
        coverage=_coverage(runs),
        fitted_at_ms=int(time.time() * 1000),
    )
    pipe = runtime.redis.pipeline(transaction=True)
    pipe.set(KNOWLEDGE_KEY, json.dumps(_shrunk(fitted.to_json())))
    pipe.set(VERSION_KEY, str(fitted.fitted_at_ms))
    pipe.execute()
    log.info(
        "estimator refit: %d actions, %d runs in %.0f ms",
        len(actions),
        len(runs),
        (time.perf_counter() - started) * 1000,
    )
    return fitted


def _finished_stages(runtime: Runtime) -> dict[tuple[str, str], list[StageExecution]]:
    with runtime.db.session() as session:
        rows = session.scalars(
            select(StageExecution)
            .where(
                StageExecution.status == StageStatus.COMPLETED,
                StageExecution.cache_hit.is_(False),
                StageExecution.time_ms.is_not(None),
            )
            .order_by(StageExecution.completed_at.desc())
            .limit(ROWS_PER_ACTION * 25)
        ).all()
    grouped: dict[tuple[str, str], list[StageExecution]] = defaultdict(list)
    for row in rows:
        bucket = grouped[(row.worker_name, row.action)]
        if len(bucket) < ROWS_PER_ACTION:
            bucket.append(row)
    return grouped


def _units(runtime: Runtime, stages: list[StageExecution]) -> dict[tuple[str, str], float]:
    """Units used per (stage row id, resource), from the ledger rows of the same period."""
    moments = [_aware(s.started_at or s.completed_at) for s in stages if s.completed_at]
    if not moments:
        return {}
    since = min(moments)
    wanted = {s.stage_id for s in stages}
    with runtime.db.session() as session:
        rows = session.execute(
            select(
                ResourceUsage.stage_id, ResourceUsage.resource_name, ResourceUsage.quantity_used
            ).where(ResourceUsage.timestamp >= since)
        ).all()
    used: dict[tuple[str, str], float] = defaultdict(float)
    for stage_id, resource, quantity in rows:
        if stage_id in wanted:
            used[(stage_id, resource)] += float(quantity)
    return used


def _items(row: StageExecution) -> float | None:
    value = (row.summary_data or {}).get("items_processed")
    return float(value) if isinstance(value, int | float) else None


def _fit_action(
    rows: list[StageExecution],
    units: dict[tuple[str, str], float],
    items: dict[tuple[str, str], float | None],
) -> ActionModels:
    time_rows, item_rows = [], []
    unit_rows: dict[str, list[tuple[dict[str, float], float]]] = defaultdict(list)
    for row in rows:
        features = _training_features(row, items)
        time_rows.append((features, float(row.time_ms or 0)))
        produced = items.get((row.execution_id, row.stage_name))
        if produced is not None:
            item_rows.append((features, produced))
        for key in features:
            if key.startswith("uses:"):
                resource = key.removeprefix("uses:")
                unit_rows[resource].append((features, units.get((row.stage_id, resource), 0.0)))
    fitted_units = {r: predictor.fit(v) for r, v in unit_rows.items()}
    return ActionModels(
        time=predictor.fit(time_rows),
        items=predictor.fit(item_rows),
        units={r: m for r, m in fitted_units.items() if m is not None},
    )


def _training_features(
    row: StageExecution, items: dict[tuple[str, str], float | None]
) -> dict[str, float]:
    recorded_features = dict(row.features or {})
    deps = recorded_features.pop("_deps", [])
    upstream = [items.get((row.execution_id, d)) for d in deps]
    features = {k: float(v) for k, v in recorded_features.items() if isinstance(v, int | float)}
    if any(u is not None for u in upstream):
        total = sum(u for u in upstream if u is not None)
        features[predictor.IN_ITEMS] = math.log1p(max(0.0, total))
    return features


def _recent_runs(runtime: Runtime) -> list[PipelineExecution]:
    """Recent completed runs that ran once (a resumed run's time says little) with an
    estimate recorded."""
    with runtime.db.session() as session:
        return list(
            session.scalars(
                select(PipelineExecution)
                .where(
                    PipelineExecution.status == ExecutionStatus.COMPLETED,
                    PipelineExecution.resume_count == 0,
                    PipelineExecution.completed_at.is_not(None),
                )
                .order_by(PipelineExecution.completed_at.desc())
                .limit(RECENT_RUNS)
            ).all()
        )


def actual_time_ms(run: PipelineExecution) -> float | None:
    """What the user waited: submission to the end (admission and queueing included)."""
    if run.completed_at is None or run.created_at is None:
        return None
    return max(0.0, (_aware(run.completed_at) - _aware(run.created_at)).total_seconds() * 1000)


def _overheads(
    runtime: Runtime, runs: list[PipelineExecution]
) -> Iterable[tuple[dict[str, float], float]]:
    """Per run that had the engine to itself (no other run overlapped it: a run of a burst
    says how busy the engine was, not what it costs; the queue wait is estimated apart), what
    the engine added beyond its stages' own critical path."""
    alone = _alone(runtime, runs)
    for run in runs:
        if run.execution_id not in alone:
            continue
        total = actual_time_ms(run)
        stages = run.stages
        if total is None or not stages or any(s.time_ms is None for s in stages):
            continue
        deps = {s.stage_name: list((s.features or {}).get("_deps", [])) for s in stages}
        times = {s.stage_name: float(s.time_ms or 0) for s in stages}
        path = _path(deps, times)
        hops = _path(deps, dict.fromkeys(deps, 1.0))
        yield overhead_features(int(hops), len(stages)), max(0.0, total - path)


def _alone(runtime: Runtime, runs: list[PipelineExecution]) -> set[str]:
    """The runs of ``runs`` whose time (submission to end) no other run's overlapped."""
    if not runs:
        return set()
    since = min(_aware(r.created_at) for r in runs)
    with runtime.db.session() as session:
        spans = session.execute(
            select(
                PipelineExecution.execution_id,
                PipelineExecution.created_at,
                PipelineExecution.completed_at,
            ).where(PipelineExecution.created_at >= since)
        ).all()
    now = datetime.now(UTC)
    intervals = sorted(
        (_aware(start), _aware(end) if end else now, run_id) for run_id, start, end in spans
    )
    alone: set[str] = set()
    reach = None  # the latest end among the runs that started before this one
    for index, (start, end, run_id) in enumerate(intervals):
        after = intervals[index + 1][0] if index + 1 < len(intervals) else None
        if (reach is None or reach <= start) and (after is None or after >= end):
            alone.add(run_id)
        reach = end if reach is None else max(reach, end)
    return alone


def _path(deps: dict[str, list[str]], times: dict[str, float]) -> float:
    finish: dict[str, float] = {}

    def done(stage: str, seen: frozenset[str] = frozenset()) -> float:
        if stage not in finish:
            before = [done(d, seen | {stage}) for d in deps.get(stage, []) if d in deps]
            finish[stage] = times.get(stage, 0.0) + max(before, default=0.0)
        return finish[stage]

    return max((done(s) for s in deps), default=0.0)


def _coverage(runs: list[PipelineExecution]) -> Coverage:
    inside = [
        _inside(run.estimate["time_ms"], actual_time_ms(run))
        for run in runs[:50]
        if run.estimate and "time_ms" in run.estimate and actual_time_ms(run) is not None
    ]
    if not inside:
        return Coverage()
    return Coverage(share=sum(inside) / len(inside), runs=len(inside))


def _inside(interval: dict[str, float], actual: float | None) -> bool:
    return actual is not None and interval["p10"] <= actual <= interval["p90"]


def _shrunk(data: dict[str, Any]) -> dict[str, Any]:
    """The fit with each model's residuals cut to KEPT_RESIDUALS quantile points."""

    def shrink(model: dict[str, Any] | None) -> dict[str, Any] | None:
        if model and len(model["residuals"]) > KEPT_RESIDUALS:
            levels = np.linspace(0, 1, KEPT_RESIDUALS)
            model["residuals"] = np.quantile(model["residuals"], levels).tolist()
        return model

    for action in data["actions"]:
        action["time"], action["items"] = shrink(action["time"]), shrink(action["items"])
        action["units"] = {r: shrink(u) for r, u in action["units"].items()}
    data["overhead"] = shrink(data["overhead"])
    return data


# -- how good the estimates were -------------------------------------------------------------


def accuracy(runtime: Runtime, *, template: str | None = None, last: int = 100) -> dict[str, Any]:
    """Median absolute % error of time and cost, interval coverage and the share finished
    within the p90, over the last runs with an estimate; per template and per stage."""
    with runtime.db.session() as session:
        query = (
            select(PipelineExecution)
            .where(
                PipelineExecution.status == ExecutionStatus.COMPLETED,
                PipelineExecution.resume_count == 0,
                PipelineExecution.estimate.is_not(None),
            )
            .order_by(PipelineExecution.completed_at.desc())
            .limit(max(1, min(last, 10_000)))
        )
        if template:
            query = query.where(PipelineExecution.template_name == template)
        runs = list(session.scalars(query).all())
        per_stage = _stage_accuracy(runs)
    by_template: dict[str, list[PipelineExecution]] = defaultdict(list)
    for run in runs:
        by_template[run.template_name].append(run)
    return {
        **_run_accuracy(runs),
        "templates": {name: _run_accuracy(group) for name, group in sorted(by_template.items())},
        "stages": per_stage,
    }


def _run_accuracy(runs: list[PipelineExecution]) -> dict[str, Any]:
    time_errors, cost_errors, inside, under_p90 = [], [], [], []
    for run in runs:
        actual = actual_time_ms(run)
        stated = (run.estimate or {}).get("time_ms")
        if actual is None or not stated:
            continue
        time_errors.append(abs(actual - stated["p50"]) / max(actual, 1.0))
        inside.append(_inside(stated, actual))
        under_p90.append(actual <= stated["p90"])
        expected = (run.estimate or {}).get("cost_usd", {}).get("expected")
        if expected is not None:
            cost_errors.append(_relative(run.total_cost_usd or 0.0, expected))
    return {
        "runs": len(time_errors),
        "time_median_abs_pct_error": _pct(statistics.median(time_errors)) if time_errors else None,
        "cost_median_abs_pct_error": _pct(statistics.median(cost_errors)) if cost_errors else None,
        "interval_coverage": round(sum(inside) / len(inside), 3) if inside else None,
        "within_p90": round(sum(under_p90) / len(under_p90), 3) if under_p90 else None,
    }


def _stage_accuracy(runs: list[PipelineExecution]) -> dict[str, Any]:
    errors: dict[str, list[float]] = defaultdict(list)
    inside: dict[str, list[bool]] = defaultdict(list)
    for run in runs:
        stated = (run.estimate or {}).get("stages", {})
        for stage in run.stages:
            interval = stated.get(stage.stage_name)
            if interval is None or stage.time_ms is None or stage.cache_hit:
                continue
            key = f"{run.template_name}.{stage.stage_name}"
            errors[key].append(abs(stage.time_ms - interval["p50"]) / max(stage.time_ms, 1.0))
            inside[key].append(interval["p10"] <= stage.time_ms <= interval["p90"])
    return {
        key: {
            "stages": len(values),
            "time_median_abs_pct_error": _pct(statistics.median(values)),
            "interval_coverage": round(sum(inside[key]) / len(inside[key]), 3),
        }
        for key, values in sorted(errors.items())
    }


def _relative(actual: float, expected: float) -> float:
    """The error as a fraction of what it cost; a run that cost nothing against a nonzero
    estimate is 100 % off (a fraction of zero would be a meaningless 1e11 %)."""
    if actual == expected:
        return 0.0
    if actual == 0:
        return 1.0
    return abs(actual - expected) / abs(actual)


def _pct(fraction: float) -> float:
    return round(100 * fraction, 1)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value

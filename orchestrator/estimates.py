"""``POST /estimate`` behind one function: template hints, history, live resources."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from orchestrator.coordinator import prepare, run_needs
from orchestrator.core.estimator import Estimate, WorkerStats, estimate
from orchestrator.core.templates import BoundStage
from orchestrator.db import StageExecution
from orchestrator.runtime import Runtime


def history(runtime: Runtime) -> dict[tuple[str, str], WorkerStats]:
    """Average time and cost of completed (not cached) stages, per worker type and action."""
    with runtime.db.session() as session:
        rows = session.execute(
            select(
                StageExecution.worker_name,
                StageExecution.action,
                func.avg(StageExecution.time_ms),
                func.avg(StageExecution.cost_usd),
                func.count(),
            )
            .where(StageExecution.status == "completed", StageExecution.cache_hit.is_(False))
            .group_by(StageExecution.worker_name, StageExecution.action)
        ).all()
    return {
        (worker, action): WorkerStats(float(avg_time or 0), float(avg_cost or 0), int(count))
        for worker, action, avg_time, avg_cost, count in rows
    }


def cost_and_time(runtime: Runtime, stages: list[BoundStage]) -> Estimate:
    """Cost, time and confidence of bound stages from history and prices: no live state, so
    cheap enough for every submission to record."""
    return estimate(stages, history=history(runtime), prices=runtime.pool.prices())


def estimate_run(
    runtime: Runtime, template_name: str, parameters: dict[str, Any]
) -> dict[str, Any]:
    """Feasibility, cost, time, confidence and a per-stage breakdown, before anything runs."""
    _template, stages = prepare(runtime, template_name, parameters)
    result = cost_and_time(runtime, stages)
    needs = run_needs(stages)
    snapshot = runtime.admission.snapshot()
    reasons: list[str] = []
    availability: dict[str, Any] = {}
    for resource, needed in needs.quotas.items():
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
    for worker in needs.workers:
        capacity = snapshot["worker_capacity"].get(worker) or {
            "max": runtime.pool.workers.max_for(worker),
            "active": 0,
        }
        availability[f"workers.{worker}"] = (
            f"{capacity['max'] - capacity['active']}/{capacity['max']} available"
        )
        if capacity["max"] == 0:
            reasons.append(f"worker type {worker} has no capacity")
    return {
        "feasible": not reasons,
        **result.as_dict(),
        "resource_availability": availability,
        "reasons": reasons,
    }

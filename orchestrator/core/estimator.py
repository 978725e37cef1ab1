"""Estimates before a run: cost, time along the critical path, and how sure we are.

Pure arithmetic over the bound stages, what the worker registry has learned (averages and
sample counts) and the pool's prices; ``POST /estimate`` and ``submit`` call ``estimate``.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.templates import BoundStage


@dataclass(frozen=True)
class WorkerStats:
    """What history says about one worker type's action."""

    avg_time_ms: float | None = None
    avg_cost_usd: float | None = None
    samples: int = 0


@dataclass(frozen=True)
class StageEstimate:
    stage: str
    worker: str
    action: str
    cost_usd: float
    time_ms: int
    source: str  # "history" or "template hint"
    resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Estimate:
    cost_usd: float
    time_ms: int
    confidence: float
    breakdown: list[StageEstimate]

    def as_dict(self) -> dict[str, Any]:
        return {
            "estimated_cost_usd": round(self.cost_usd, 6),
            "estimated_time_ms": self.time_ms,
            "confidence": round(self.confidence, 2),
            "breakdown": [s.__dict__ for s in self.breakdown],
        }


#: Confidence with no history at all: template hints are guesses.
BASE_CONFIDENCE = 0.5
#: Samples after which history is trusted as much as it will be.
FULL_CONFIDENCE_SAMPLES = 20


def critical_path_ms(stages: Sequence[BoundStage], times: Mapping[str, int] | None = None) -> int:
    """The longest chain of stage times through the DAG: the run's time if nothing waits."""
    by_id = {stage.id: stage for stage in stages}
    # Template order need not put dependencies first (a template may list them last).
    order = graphlib.TopologicalSorter({s.id: s.depends_on for s in stages}).static_order()
    finish: dict[str, int] = {}
    for stage_id in order:
        stage = by_id.get(stage_id)
        if stage is None:  # a dependency outside ``stages`` (a checkpoint of a resumed run)
            continue
        own = (times or {}).get(stage.id, stage.estimate.time_ms)
        finish[stage.id] = own + max((finish.get(d, 0) for d in stage.depends_on), default=0)
    return max(finish.values(), default=0)


def estimate(
    stages: Sequence[BoundStage],
    *,
    history: Mapping[tuple[str, str], WorkerStats] | None = None,
    prices: Mapping[str, float] | None = None,
) -> Estimate:
    """Cost and time per stage from history when it exists, else from the template's hints."""
    history = history or {}
    prices = prices or {}
    breakdown: list[StageEstimate] = []
    weights: list[float] = []
    for stage in stages:
        stats = history.get((stage.worker, stage.action), WorkerStats())
        resource_cost = sum(q * prices.get(r, 0.0) for r, q in stage.resources.items())
        if stats.samples and stats.avg_time_ms is not None:
            time_ms = int(stats.avg_time_ms)
            cost = stats.avg_cost_usd if stats.avg_cost_usd is not None else resource_cost
            source = "history"
            weights.append(min(1.0, stats.samples / FULL_CONFIDENCE_SAMPLES))
        else:
            time_ms = stage.estimate.time_ms
            cost = stage.estimate.cost_usd or resource_cost
            source = "template hint"
            weights.append(0.0)
        breakdown.append(
            StageEstimate(
                stage.id,
                stage.worker,
                stage.action,
                round(cost, 6),
                time_ms,
                source,
                dict(stage.resources),
            )
        )
    times = {s.stage: s.time_ms for s in breakdown}
    learned = sum(weights) / len(weights) if weights else 0.0
    confidence = BASE_CONFIDENCE + (0.95 - BASE_CONFIDENCE) * learned
    return Estimate(
        cost_usd=sum(s.cost_usd for s in breakdown),
        time_ms=critical_path_ms(stages, times),
        confidence=confidence,
        breakdown=breakdown,
    )

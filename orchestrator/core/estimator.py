"""Estimates before a run: time quantiles over the DAG, cost, and a confidence one can check.

Pure: what was learned (``Knowledge``: a model per worker type and action of its time, its
items out and its units of each resource, plus the engine's own overhead per run) comes in,
an ``Estimate`` goes out. Stage times are taken as comonotonic (what slows one stage of a run,
a busy machine or a slow provider, slows the others): the run's p10, p50 and p90 are then
exactly the critical path of its stages' p10s, p50s and p90s, plus the engine's overhead at the
same level and the queue wait now. Independent draws would put the run's median too high: the
maximum of parallel stages drawn apart is larger than any of them usually is.

``confidence`` is not a guess: it is the share of recent runs whose actual time fell inside the
interval they were told (measured by ``orchestrator.engine.estimates``), with the number of
runs behind it.
"""

from __future__ import annotations

import graphlib
import math
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from orchestrator.core.predictor import IN_ITEMS, LEVELS, Model, Quantiles, param_features
from orchestrator.core.templates import BoundStage

#: Without history a template's hint is the median and the interval spans this factor
#: either way (p10 = hint / 4, p90 = hint * 4).
HINT_SPREAD = 4.0
#: The engine's own time per run before anything is learned: submit to first stage, the
#: dispatch of each stage along the critical path, finish.
DEFAULT_OVERHEAD_MS, DEFAULT_HOP_MS = 60.0, 15.0
#: Stated when no run has finished yet: the interval's nominal coverage.
NOMINAL_CONFIDENCE = 0.8


@dataclass(frozen=True)
class ActionModels:
    """What runs of one worker type's action taught: time (ms), items out, units used."""

    time: Model | None = None
    items: Model | None = None
    units: dict[str, Model] = field(default_factory=dict)


@dataclass(frozen=True)
class Coverage:
    """How recent runs fared against their stated interval."""

    share: float | None = None
    runs: int = 0


@dataclass(frozen=True)
class Knowledge:
    """Everything the estimator knows; fitted from the database, read by every estimate."""

    actions: dict[tuple[str, str], ActionModels] = field(default_factory=dict)
    overhead: Model | None = None
    coverage: Coverage = field(default_factory=Coverage)
    fitted_at_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        def model(m: Model | None) -> dict[str, Any] | None:
            return m.to_json() if m else None

        return {
            "actions": [
                {
                    "worker": w,
                    "action": a,
                    "time": model(m.time),
                    "items": model(m.items),
                    "units": {r: u.to_json() for r, u in m.units.items()},
                }
                for (w, a), m in self.actions.items()
            ],
            "overhead": model(self.overhead),
            "coverage": {"share": self.coverage.share, "runs": self.coverage.runs},
            "fitted_at_ms": self.fitted_at_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Knowledge:
        def model(raw: Mapping[str, Any] | None) -> Model | None:
            return Model.from_json(raw) if raw else None

        actions = {
            (e["worker"], e["action"]): ActionModels(
                model(e["time"]),
                model(e["items"]),
                {r: Model.from_json(u) for r, u in e["units"].items()},
            )
            for e in data.get("actions", [])
        }
        return cls(
            actions,
            model(data.get("overhead")),
            Coverage(**data.get("coverage", {})),
            int(data.get("fitted_at_ms", 0)),
        )


@dataclass(frozen=True)
class StageEstimate:
    stage: str
    worker: str
    action: str
    cost_usd: float
    time_ms: int
    time: Quantiles
    source: str  # "history" or "template hint"
    #: "llm" or "offline" for a stage whose resources need an LLM; None otherwise.
    method: str | None
    resources: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "worker": self.worker,
            "action": self.action,
            "cost_usd": round(self.cost_usd, 6),
            "time_ms": self.time_ms,
            "time": self.time.as_dict(),
            "source": self.source,
            "method": self.method,
            "resources": self.resources,
        }


@dataclass(frozen=True)
class Estimate:
    time: Quantiles
    cost_usd: float
    cost_p90_usd: float
    confidence: float
    confidence_runs: int
    breakdown: list[StageEstimate]
    overhead_ms: int = 0
    queue_wait_ms: int = 0

    @property
    def time_ms(self) -> int:
        return round(self.time.p50)

    def after_wait(self, wait_ms: float) -> Estimate:
        """The same run started ``wait_ms`` later: behind the runs queued ahead of it."""
        wait = max(0.0, wait_ms)
        shifted = Quantiles(self.time.p10 + wait, self.time.p50 + wait, self.time.p90 + wait)
        return replace(self, time=shifted, queue_wait_ms=int(wait))

    def as_dict(self) -> dict[str, Any]:
        return {
            "estimated_cost_usd": round(self.cost_usd, 6),
            "estimated_time_ms": self.time_ms,
            "confidence": round(self.confidence, 3),
            "confidence_runs": self.confidence_runs,
            "time_ms": self.time.as_dict(),
            "cost_usd": {"expected": round(self.cost_usd, 6), "p90": round(self.cost_p90_usd, 6)},
            "overhead_ms": self.overhead_ms,
            "queue_wait_ms": self.queue_wait_ms,
            "breakdown": [s.as_dict() for s in self.breakdown],
        }


def stage_features(
    stage: BoundStage, unusable: Set[str], in_items: float | None
) -> dict[str, float]:
    """What is known of a stage before it runs: its params, which of its resources it can use
    (an LLM stage without an LLM runs its offline method), the items flowing into it."""
    features = param_features(stage.params)
    for resource in stage.resources:
        features[f"uses:{resource}"] = 0.0 if resource in unusable else 1.0
    if in_items is not None:
        features[IN_ITEMS] = math.log1p(max(0.0, in_items))
    return features


def critical_path_ms(stages: Sequence[BoundStage], times: Mapping[str, float] | None = None) -> int:
    """The longest chain of stage times through the DAG: the run's time if nothing waits."""
    finish = _finish_times(
        stages, {s.id: np.array([(times or {}).get(s.id, s.estimate.time_ms)]) for s in stages}
    )
    return int(max((float(v[0]) for v in finish.values()), default=0))


def depth(stages: Sequence[BoundStage]) -> int:
    """Stages on the longest chain (each is a dispatch the engine adds time for)."""
    return critical_path_ms(stages, {s.id: 1 for s in stages})


def estimate(
    stages: Sequence[BoundStage],
    knowledge: Knowledge | None = None,
    *,
    prices: Mapping[str, float] | None = None,
    unusable: Set[str] = frozenset(),
    needs: Mapping[str, str] | None = None,
) -> Estimate:
    """Quantiles of the run's time and its cost; ``unusable`` are resources this run cannot
    use (they need what is not configured): neither reserved nor priced; ``needs`` names what a
    resource needs to exist (``openai_api`` -> ``llm``), which says each stage's method."""
    knowledge = knowledge or Knowledge()
    prices = prices or {}
    order = _order(stages)
    items: dict[str, float | None] = {}
    time_at: dict[str, np.ndarray] = {}
    cost_at = np.zeros(len(LEVELS))
    breakdown: dict[str, StageEstimate] = {}
    for stage in order:
        models = knowledge.actions.get((stage.worker, stage.action), ActionModels())
        upstream = [items.get(d) for d in stage.depends_on]
        in_items = sum(i for i in upstream if i is not None) if any(upstream) else None
        features = stage_features(stage, unusable, in_items)
        items[stage.id] = models.items.quantiles(features).p50 if models.items else None
        time_at[stage.id], source = _stage_time(stage, models, features)
        quantiles = Quantiles(*(float(v) for v in time_at[stage.id]))
        stage_cost = _stage_cost(stage, models, features, prices, unusable)
        cost_at += stage_cost
        breakdown[stage.id] = StageEstimate(
            stage.id,
            stage.worker,
            stage.action,
            float(stage_cost[1]),
            round(quantiles.p50),
            quantiles,
            source,
            _method(stage, unusable, needs or {}),
            {r: q for r, q in stage.resources.items() if r not in unusable},
        )
    finish = _finish_times(stages, time_at)
    path = np.max(np.vstack(list(finish.values())), axis=0) if finish else np.zeros(len(LEVELS))
    overhead = _overhead(stages, knowledge.overhead)
    p10, p50, p90 = (float(v) for v in path + overhead)
    coverage = knowledge.coverage
    return Estimate(
        time=Quantiles(p10, p50, p90),
        cost_usd=float(cost_at[1]),
        cost_p90_usd=float(cost_at[2]),
        confidence=coverage.share if coverage.share is not None else NOMINAL_CONFIDENCE,
        confidence_runs=coverage.runs,
        breakdown=[breakdown[s.id] for s in stages],
        overhead_ms=int(overhead[1]),
    )


def remaining_ms(
    deps: Mapping[str, Sequence[str]],
    p50: Mapping[str, float],
    ended: Set[str],
    running_for: Mapping[str, float],
) -> int:
    """What is left of a run: the critical path of the stages not ended, each at its
    predicted median (less what a running stage already spent).

    Every stage's event asks this, so ``deps`` is expected in topological order (the
    coordinator stores it so: see ``topological``) and one pass does; any other order is
    sorted first."""
    finish: dict[str, float] = {}
    latest = 0.0
    for s, before in deps.items():
        start = 0.0
        for d in before:  # plain loops: this runs twice per stage, on runs of 1,000 stages
            done_at = finish.get(d)
            if done_at is None:
                if d in deps:  # not in topological order
                    return remaining_ms(topological(deps), p50, ended, running_for)
            elif done_at > start:
                start = done_at
        own = 0.0 if s in ended else max(0.0, p50.get(s, 0.0) - running_for.get(s, 0.0))
        finish[s] = start + own
        latest = max(latest, start + own)
    return int(latest)


def topological(deps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """``deps`` with every stage after the stages it depends on (dependencies outside it
    are kept and ignored)."""
    order = graphlib.TopologicalSorter({k: list(v) for k, v in deps.items()}).static_order()
    return {s: list(deps[s]) for s in order if s in deps}


def _order(stages: Sequence[BoundStage]) -> list[BoundStage]:
    by_id = {s.id: s for s in stages}
    sorter = graphlib.TopologicalSorter({s.id: s.depends_on for s in stages})
    return [by_id[i] for i in sorter.static_order() if i in by_id]


def _finish_times(
    stages: Sequence[BoundStage], own: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    finish: dict[str, np.ndarray] = {}
    for stage in _order(stages):  # a dependency outside ``stages`` (a checkpoint) adds 0
        before = [finish[d] for d in stage.depends_on if d in finish]
        start = np.max(np.vstack(before), axis=0) if before else 0.0
        finish[stage.id] = own[stage.id] + start
    return finish


def _stage_time(
    stage: BoundStage, models: ActionModels, features: Mapping[str, float]
) -> tuple[np.ndarray, str]:
    """The stage's time at p10, p50, p90: learned, else the template's hint, widely."""
    if models.time is not None:
        return np.minimum(models.time.at(features, LEVELS), longest_ms(stage)), "history"
    hint = float(stage.estimate.time_ms)
    return np.array([hint / HINT_SPREAD, hint, hint * HINT_SPREAD]), "template hint"


def longest_ms(stage: BoundStage) -> float:
    """The longest a stage can take: each of its attempts cut at its timeout, with the
    longest wait between them. No learned time is stated beyond it."""
    retry = stage.retry
    waits = sum(
        min(retry.max_backoff_s, retry.backoff_s * retry.factor ** (attempt - 1))
        for attempt in range(1, retry.max_attempts)
    )
    return (stage.timeout_s * retry.max_attempts + waits) * 1000.0


def _stage_cost(
    stage: BoundStage,
    models: ActionModels,
    features: Mapping[str, float],
    prices: Mapping[str, float],
    unusable: Set[str],
) -> np.ndarray:
    """USD at p10, p50, p90: each usable resource's units (learned, else the stage's cost
    hint, else its reservation, all it may use)."""
    cost = np.zeros(len(LEVELS))
    hinted = stage.estimate.cost_usd
    mine = [r for r in stage.resources if r not in unusable]
    for resource in mine:  # what the run cannot use is neither reserved nor priced
        price = prices.get(resource, 0.0)
        model = models.units.get(resource)
        if model is not None:
            cost += model.at(features, LEVELS) * price
        elif not hinted:
            cost += stage.resources[resource] * price
    learned = any(r in models.units for r in mine)
    if hinted and not learned and (mine or not stage.resources):
        cost += hinted
    return cost


def _overhead(stages: Sequence[BoundStage], model: Model | None) -> np.ndarray:
    hops = depth(stages)
    if model is None:
        return np.full(len(LEVELS), DEFAULT_OVERHEAD_MS + DEFAULT_HOP_MS * hops)
    return model.at(overhead_features(hops, len(stages)), LEVELS)


def overhead_features(hops: int, stages: int) -> dict[str, float]:
    """What the engine's own time per run depends on: dispatches in a row, stages in all
    (and their logarithms, so a run larger than any seen follows their power law)."""
    return param_features({"hops": hops, "stages": stages})


def _method(stage: BoundStage, unusable: Set[str], needs: Mapping[str, str]) -> str | None:
    """``llm`` (what its resources need) when the run has it, ``offline`` when it has not,
    None for a stage that needs nothing optional."""
    wanted = [r for r in stage.resources if r in needs]
    if not wanted:
        return None
    if any(r in unusable for r in wanted):
        return "offline"
    return needs[wanted[0]]

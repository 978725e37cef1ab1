"""The estimator's pure core: quantile models, the run's time over the DAG, cost, ETA.

No history, one sample, identical samples, a category never seen, NaN in the features: each
gives an honest interval, never a negative or NaN figure.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from orchestrator.core import predictor
from orchestrator.core.estimator import (
    DEFAULT_HOP_MS,
    DEFAULT_OVERHEAD_MS,
    NOMINAL_CONFIDENCE,
    ActionModels,
    Coverage,
    Knowledge,
    estimate,
    overhead_features,
    remaining_ms,
    stage_features,
    topological,
)
from orchestrator.core.templates import bind, parse_template

TEMPLATE = {
    "name": "e",
    "parameters": {"n": {"type": "integer", "default": 1}, "mode": {"default": "fast"}},
    "stages": [
        {"id": "a", "worker": "w", "action": "x", "params": {"n": "${n}", "mode": "${mode}"},
         "estimate": {"time_ms": 100, "cost_usd": 0.01}},
        {"id": "b", "worker": "w", "action": "y", "depends_on": ["a"],
         "estimate": {"time_ms": 500}, "resources": {"openai_api": 1000}},
        {"id": "c", "worker": "w", "action": "x", "depends_on": ["a"], "params": {"n": 1},
         "estimate": {"time_ms": 200, "cost_usd": 0.02}},
        {"id": "d", "worker": "w", "action": "z", "depends_on": ["b", "c"],
         "estimate": {"time_ms": 50}},
    ],
}  # fmt: skip
PRICES = {"openai_api": 0.00001}


def stages(**params: object):
    return bind(parse_template(TEMPLATE), dict(params))


def sane(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def test_without_history_the_hints_are_the_median_and_the_interval_is_wide() -> None:
    result = estimate(stages(), prices=PRICES)
    hops = 3  # a, b, d
    assert result.time.p50 == pytest.approx(
        650 + DEFAULT_OVERHEAD_MS + DEFAULT_HOP_MS * hops, rel=0.35
    )
    assert result.time.p10 < result.time.p50 / 1.5 and result.time.p90 > result.time.p50 * 1.5
    assert result.cost_usd == pytest.approx(0.01 + 1000 * 0.00001 + 0.02)
    assert {s.source for s in result.breakdown} == {"template hint"}
    assert (result.confidence, result.confidence_runs) == (NOMINAL_CONFIDENCE, 0)


def test_a_resource_the_run_cannot_use_is_neither_priced_nor_reserved() -> None:
    offline = estimate(
        stages(), prices=PRICES, unusable={"openai_api"}, needs={"openai_api": "llm"}
    )
    b = next(s for s in offline.breakdown if s.stage == "b")
    assert (b.method, b.resources, b.cost_usd) == ("offline", {}, 0.0)
    online = estimate(stages(), prices=PRICES, needs={"openai_api": "llm"})
    assert next(s for s in online.breakdown if s.stage == "b").method == "llm"


def rows_where_time_grows_with_n(count: int, seed: int = 1):
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        n = rng.randint(1, 20)
        features = stage_features(stages(n=n)[0], frozenset(), None)
        rows.append((features, 50.0 * n * rng.uniform(0.9, 1.1)))
    return rows


def test_a_model_learns_what_a_parameter_does_to_the_time() -> None:
    model = predictor.fit(rows_where_time_grows_with_n(60))
    assert model is not None and model.names
    knowledge = Knowledge({("w", "x"): ActionModels(time=model)}, coverage=Coverage(0.85, 30))
    small = estimate(stages(n=2), knowledge).breakdown[0]
    big = estimate(stages(n=18), knowledge).breakdown[0]
    assert small.source == "history"
    assert big.time.p50 > 4 * small.time.p50
    assert big.time.p10 < 900 < big.time.p90  # 50 ms * 18 inside the 80% interval
    assert estimate(stages(n=2), knowledge).confidence == 0.85


def test_a_value_never_seen_widens_the_interval() -> None:
    model = predictor.fit(rows_where_time_grows_with_n(40))
    assert model is not None
    features = stage_features(stages(n=5)[0], frozenset(), None)
    seen = model.quantiles(features)
    novel = model.quantiles({**{k: v for k, v in features.items() if "mode=" not in k},
                             "mode=slow": 1.0})  # fmt: skip
    assert novel.p90 / novel.p10 > seen.p90 / seen.p10


def rows_where_the_time_is_noise(count: int, seed: int = 2):
    """A stage that takes about 1 ms whatever ``n`` is (1 to 1,000), with the jitter a real
    one has: a straight line on the log scale through that noise must not be extrapolated."""
    rng = random.Random(seed)
    return [
        (stage_features(stages(n=n)[0], frozenset(), None), rng.uniform(0.5, 3.0))
        for n in [rng.choice([1, 10, 100, 1000]) for _ in range(count)]
    ]


@pytest.mark.parametrize("n", [3_000, 30_000, 10**9])
def test_a_value_far_beyond_training_gives_a_bounded_estimate(n: int) -> None:
    model = predictor.fit(rows_where_the_time_is_noise(80))
    assert model is not None and model.names
    within = model.quantiles(stage_features(stages(n=1000)[0], frozenset(), None))
    beyond = model.quantiles(stage_features(stages(n=n)[0], frozenset(), None))
    assert beyond.p50 < 10 * max(within.p50, 1.0)  # not 7 days, not 5e21 ms
    assert beyond.p90 / max(beyond.p10, 1e-9) > within.p90 / max(within.p10, 1e-9)  # wider


def test_a_size_beyond_training_follows_its_power_law() -> None:
    model = predictor.fit(rows_where_time_grows_with_n(60))  # 50 ms per n, n in 1..20
    assert model is not None
    q = model.quantiles(stage_features(stages(n=200)[0], frozenset(), None))
    assert q.p10 < 50 * 200 < q.p90 * 3  # about ten times n=20, not held at n=20


def test_no_learned_time_goes_beyond_what_the_timeout_allows() -> None:
    slow = [({"n": float(n)}, 1e12) for n in range(1, 20)]  # history says: forever
    model = predictor.fit(slow)
    timed = dict(TEMPLATE, stages=[dict(TEMPLATE["stages"][0], timeout_s=2,  # type: ignore[index]
                                        retry={"max_attempts": 2, "backoff_s": 1})])  # fmt: skip
    bound = bind(parse_template(timed), {})
    result = estimate(bound, Knowledge({("w", "x"): ActionModels(time=model)}))
    longest = (2 * 2 + 1) * 1000  # two attempts of 2 s, one wait of 1 s
    assert result.breakdown[0].time.p90 == longest
    assert result.time.p90 < longest + 10_000  # the run: that, plus the engine's overhead


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [({"n": 1.0}, 100.0)],  # one sample: its value, with a wide interval
        [({"n": 1.0}, 100.0)] * 2,
        [({"n": 1.0}, 100.0)] * 12,  # all identical
        [({"n": float("nan")}, 100.0), ({"n": 2.0}, 0.0), ({"n": 3.0}, 1e9)] * 3,
    ],
)
def test_edges_give_finite_non_negative_figures(rows) -> None:
    model = predictor.fit(rows)
    if len(rows) < predictor.MIN_ROWS:
        assert model is None
        model_set = ActionModels()
    else:
        assert model is not None
        q = model.quantiles({"n": 5.0})
        assert all(sane(v) for v in (q.p10, q.p50, q.p90)) and q.p10 < q.p50 < q.p90
        model_set = ActionModels(time=model, units={"openai_api": model})
    result = estimate(stages(), Knowledge({("w", "x"): model_set}), prices=PRICES)
    figures = [result.time.p10, result.time.p50, result.time.p90, result.cost_usd]
    assert all(sane(v) for v in figures), figures
    json.dumps(result.as_dict(), allow_nan=False)


def test_knowledge_survives_json() -> None:
    model = predictor.fit(rows_where_time_grows_with_n(20))
    assert model is not None
    knowledge = Knowledge({("w", "x"): ActionModels(model, None, {"openai_api": model})},
                          model, Coverage(0.5, 4), 123)  # fmt: skip
    again = Knowledge.from_json(json.loads(json.dumps(knowledge.to_json())))
    assert again == knowledge


def test_what_is_left_follows_what_ended() -> None:
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    p50 = {"a": 100, "b": 500, "c": 200, "d": 50}
    assert remaining_ms(deps, p50, set(), {}) == 650
    assert remaining_ms(deps, p50, {"a"}, {"b": 300}) == 250
    assert remaining_ms(deps, p50, {"a", "b"}, {}) == 250  # c still ahead of d
    assert remaining_ms(deps, p50, set(deps), {}) == 0
    backwards = dict(reversed(deps.items()))  # not topological: sorted first, same answers
    assert remaining_ms(backwards, p50, {"a"}, {"b": 300}) == 250
    assert list(topological(backwards)) in (["a", "b", "c", "d"], ["a", "c", "b", "d"])


def test_the_overhead_of_a_run_larger_than_any_seen_grows_with_it() -> None:
    rng = random.Random(3)
    rows = []
    for _ in range(40):
        hops = rng.randint(1, 10)
        rows.append((overhead_features(hops, hops), 5.0 * hops * rng.uniform(0.9, 1.1)))
    model = predictor.fit(rows)
    assert model is not None
    q = model.quantiles(overhead_features(100, 100))
    assert q.p10 < 5.0 * 100 < q.p90 * 3  # about ten times the largest run seen


def test_a_run_that_cost_nothing_is_at_most_100_percent_off() -> None:
    from datetime import UTC, datetime, timedelta

    from orchestrator.db import PipelineExecution
    from orchestrator.engine.estimates import _run_accuracy

    start = datetime(2026, 12, 1, tzinfo=UTC)
    estimate_body = {
        "time_ms": {"p10": 50, "p50": 100, "p90": 200},
        "cost_usd": {"expected": 0.0075},
    }

    def run(cost: float) -> PipelineExecution:
        return PipelineExecution(
            created_at=start,
            completed_at=start + timedelta(milliseconds=100),
            estimate=estimate_body,
            total_cost_usd=cost,
        )

    assert _run_accuracy([run(0.0)] * 3)["cost_median_abs_pct_error"] == 100.0
    assert _run_accuracy([run(0.0075)] * 3)["cost_median_abs_pct_error"] == 0.0
    assert _run_accuracy([run(0.005)] * 3)["cost_median_abs_pct_error"] == 50.0

"""DAG to series-parallel plan, and canvas size growing linearly with stages."""

from __future__ import annotations

import json

import pytest

from orchestrator.core.planner import Parallel, Series, Step, plan

S = Step


@pytest.mark.parametrize(
    ("deps", "root", "exact"),
    [
        ({"a": []}, S("a"), True),
        ({"a": [], "b": ["a"], "c": ["b"]}, Series((S("a"), S("b"), S("c"))), True),
        (
            {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]},
            Series((S("a"), Parallel((S("b"), S("c"))), S("d"))),
            True,
        ),
        ({"a": [], "b": []}, Parallel((S("a"), S("b"))), True),
        (
            {"a": [], "b": ["a"], "x": [], "y": ["x"]},
            Parallel((Series((S("a"), S("b"))), Series((S("x"), S("y"))))),
            True,
        ),
        # a->c, a->d, b->d: an "N", not series-parallel: sources first.
        (
            {"a": [], "b": [], "c": ["a"], "d": ["a", "b"]},
            Series((Parallel((S("a"), S("b"))), Parallel((S("c"), S("d"))))),
            False,
        ),
        # a transitive edge adds no constraint beyond the chain.
        ({"a": [], "b": ["a"], "c": ["a", "b"]}, Series((S("a"), S("b"), S("c"))), True),
    ],
)
def test_plans(deps: dict[str, list[str]], root: object, exact: bool) -> None:
    result = plan(deps)
    assert result.root == root
    assert result.exact is exact
    assert sorted(result.stages()) == sorted(deps)


def test_wide_fan_out_and_fan_in() -> None:
    deps: dict[str, list[str]] = {"src": []}
    deps |= {f"f{i}": ["src"] for i in range(200)}
    deps["sink"] = [f"f{i}" for i in range(200)]
    result = plan(deps)
    assert isinstance(result.root, Series)
    assert result.root.parts[0] == S("src") and result.root.parts[2] == S("sink")
    assert len(result.root.parts[1].parts) == 200  # type: ignore[union-attr]


def test_celery_canvas_grows_linearly() -> None:
    """A chain of k fan-outs of 10 (celery#10171's shape) serialises in O(stages)."""
    from celery import Celery

    from orchestrator.engine.canvas import build_canvas

    app = Celery("sizes", set_as_current=False)
    sizes = []
    for k in (1, 2, 4, 8):
        deps: dict[str, list[str]] = {}
        previous: list[str] = []
        for level in range(k):
            names = [f"l{level}_{i}" for i in range(10)]
            deps |= {n: list(previous) for n in names}
            join = f"j{level}"
            deps[join] = names
            previous = [join]
        specs = {s: {"worker": "echo", "timeout_s": 60, "depends_on": d} for s, d in deps.items()}
        canvas = build_canvas(app, "exec", plan(deps), specs, priority=3)
        sizes.append((len(deps), len(json.dumps(canvas))))
    per_stage = [size / stages for stages, size in sizes]
    assert max(per_stage) < 2 * min(per_stage), sizes
    assert sizes[-1][1] < 100_000, sizes


def test_a_long_chain_is_one_series_of_steps() -> None:
    # The longest a template may be; planning it once took seconds (cubic in its length).
    deps = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(1000)}
    result = plan(deps)
    assert result.exact
    assert result.root == Series(tuple(Step(f"s{i}") for i in range(1000)))

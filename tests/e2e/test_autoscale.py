"""PoolSizer on real worker processes: Celery remote control grows and shrinks a pool."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery

from orchestrator.ops.autoscaler import PoolSizer
from orchestrator.ops.supervisor import WorkerFleet


def _processes(app: Celery, node: str) -> int:
    stats = app.control.inspect(destination=[node], timeout=5).stats() or {}
    return len(stats[node]["pool"]["processes"])


def _settles_at(app: Celery, node: str, size: int) -> int:
    """The pool's process count once it reaches ``size`` (a resize happens after the reply)."""
    deadline = time.monotonic() + 30
    while (seen := _processes(app, node)) != size and time.monotonic() < deadline:
        time.sleep(0.2)
    return seen


def _figures(desired: int, low: int = 1, high: int = 4) -> dict[str, Any]:
    return {"desired_workers": desired, "min_workers": low, "max_workers": high, "reason": "t"}


def test_the_pool_grows_at_once_and_shrinks_after_the_hold(
    celery_app: Celery, fleet: WorkerFleet
) -> None:
    node = dict(zip(fleet.processes, fleet.node_names(), strict=True))["echo"]
    before = _processes(celery_app, node)
    wanted = {"echo": _figures(before + 1)}
    sizer = PoolSizer(celery_app, lambda: wanted, {"echo": node}, {"echo": before}, hold_s=60)
    assert sizer.tick(now_ms=0) == [f"echo: {before} -> {before + 1} processes (t)"]
    assert _settles_at(celery_app, node, before + 1) == before + 1
    wanted["echo"] = _figures(before)
    assert sizer.tick(now_ms=1_000) == []  # a dip: held
    assert sizer.sizes["echo"] == before + 1
    assert sizer.tick(now_ms=61_000) == [f"echo: {before + 1} -> {before} processes (t)"]
    assert sizer.sizes["echo"] == before
    assert _settles_at(celery_app, node, before) == before  # idle processes only were ended
    wanted["echo"] = _figures(99, high=before)  # never above max
    assert sizer.tick(now_ms=62_000) == [] and sizer.sizes["echo"] == before


def test_a_worker_that_does_not_answer_is_skipped(celery_app: Celery) -> None:
    sizer = PoolSizer(
        celery_app, lambda: {"ghost": _figures(3)}, {"ghost": "ghost@nowhere"}, {"ghost": 1},
        timeout_s=0.5,
    )  # fmt: skip
    assert sizer.tick(now_ms=0) == []
    assert sizer.sizes == {"ghost": 1}

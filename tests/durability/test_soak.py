"""The soak (``make soak``): many SIGKILLs at random moments across concurrent runs.

Kills land in running stages of several runs at once, sometimes with the worker left down for
a few seconds. A run that loses its workers more often than the reconciler's limit fails
cleanly and is resumed by hand, as an operator would. In the end every run completes, each
stage is charged exactly once, and nothing stays reserved.
"""

from __future__ import annotations

import random
import time

import pytest

from orchestrator.constants import ExecutionStatus
from orchestrator.engine import coordinator, recovery
from tests.durability.conftest import OUTAGE_ERRORS, Stack

KILLS = 15
STAGES = ["a", "b", "c", "d", "e", "f"]
TOKENS = 10


def running_stages(stack: Stack, runs: list[str], at_least_s: float) -> list[str]:
    now = time.time() * 1000
    return [
        f"{run}.{stage}"
        for run in runs
        for stage, record in stack.live(run).items()
        if record.get("status") == "running" and now - record["started_at"] >= at_least_s * 1000
    ]


def active(stack: Stack, runs: list[str]) -> list[str]:
    return [
        r for r in runs if not ExecutionStatus(coordinator.load(stack.runtime, r).status).terminal
    ]


@pytest.mark.soak
def test_soak_random_kills_across_concurrent_runs(fresh: Stack) -> None:
    stack = fresh
    rng = random.Random(20240607)
    runs: list[str] = []
    hit: list[list[str]] = []
    deadline = time.monotonic() + 900
    while len(hit) < KILLS:
        assert time.monotonic() < deadline, f"only {len(hit)} kills in 15 minutes"
        try:
            while len(active(stack, runs)) < 3:
                runs.append(stack.submit("durable", {"seconds": 1.5, "tokens": TOKENS}))
            victims = running_stages(stack, active(stack, runs), rng.uniform(0.1, 1.2))
            if victims:
                stack.kill_worker("sleep")
                hit.append(victims)
                time.sleep(rng.choice([0, 0, 0.5, 3]))  # sometimes the worker stays down
                stack.start_worker("sleep")
            stack.revive()
            recovery.reconcile(stack.runtime)
        except OUTAGE_ERRORS:
            pass
        time.sleep(0.2)

    manual = 0
    for run in runs:
        execution = stack.wait(run, timeout_s=300)
        while execution.status == ExecutionStatus.FAILED:
            assert "too many times" in (execution.error or ""), execution.error
            recovery.resume(stack.runtime, run)
            manual += 1
            execution = stack.wait(run, timeout_s=300)
        assert execution.status == ExecutionStatus.COMPLETED, (run, execution.error)
    print(
        f"soak: {len(runs)} runs, {len(hit)} kills hitting {sum(map(len, hit))} stages, "
        f"{manual} manual resumes"
    )

    expected = {f"{run}.{stage}": 1 for run in runs for stage in STAGES}
    assert stack.usage_rows_per_stage() == expected
    stack.assert_nothing_held()
    assert stack.usage_totals() == {"openai_api": pytest.approx(len(runs) * len(STAGES) * TOKENS)}

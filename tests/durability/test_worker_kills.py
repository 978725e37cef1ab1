"""SIGKILL a worker in the middle of a stage: the run completes once the worker is back.

With a Redis broker the killed worker's message stays unacknowledged until the visibility
timeout (hours), so it is the reconciler that notices: the stage's capacity lease lapses, the
run is resumed from its checkpoints. The killed message may still come back later (or at once,
on a broker that redelivers on disconnect); it must then change nothing.
"""

from __future__ import annotations

import json

import pytest

from orchestrator.constants import ExecutionStatus, StageStatus
from tests.durability.conftest import Stack, redeliver, wait_broker_idle

STAGES = ["a", "b", "c", "d", "e", "f"]
TOKENS = 100


def kill_during(stack: Stack, execution_id: str, stage: str) -> None:
    """SIGKILL the sleep worker while ``stage`` runs, and start it again at once."""
    stack.wait_running(execution_id, stage)
    stack.kill_worker("sleep")
    stack.start_worker("sleep")


def unacked_messages(stack: Stack) -> dict[str, dict[str, object]]:
    """Messages the broker holds for consumers that never acknowledged them, by tag."""
    raw = stack.runtime.redis.hgetall("unacked")
    return {tag.decode(): json.loads(value)[0] for tag, value in raw.items()}


def rows_of(stack: Stack, execution_id: str) -> dict[str, tuple[object, ...]]:
    rows = stack.stages(execution_id).items()
    return {s: (r.status, r.attempts, r.task_id, r.started_at, r.completed_at) for s, r in rows}


def check_completed_once(stack: Stack, execution_id: str, resumes: int) -> None:
    execution = stack.wait(execution_id)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert execution.resume_count == resumes
    rows = stack.stages(execution_id)
    assert {s: rows[s].status for s in STAGES} == {s: StageStatus.COMPLETED for s in STAGES}
    # One usage row per stage however often it was started, and the cost charged once.
    assert stack.usage_rows_per_stage(execution_id) == {f"{execution_id}.{s}": 1 for s in STAGES}
    price = stack.runtime.pool.price("openai_api")
    assert execution.total_cost_usd == pytest.approx(len(STAGES) * TOKENS * price)
    # One event stream for the whole run (an automatic resume does not reset it): it tells
    # of each recovery, has exactly one final event, at the end (no stale task wrote after
    # the run was closed), and since the last recovery one start per stage that ran again.
    seen = [e for _, e in stack.events(execution_id)]
    assert [e["type"] for e in seen].count("final") == 1
    assert seen[-1]["type"] == "final" and seen[-1]["status"] == "completed"
    recoveries = [i for i, e in enumerate(seen) if e.get("status") == "recovering"]
    assert len(recoveries) == resumes
    since = seen[recoveries[-1] :] if recoveries else seen
    starts = [e["stage"] for e in since if e.get("type") == "stage" and e["status"] == "running"]
    assert len(starts) == len(set(starts)), starts


def test_five_kills_in_two_runs_complete_without_leaks_or_double_charges(fresh: Stack) -> None:
    stack = fresh
    before = unacked_messages(stack)

    # Run 1: kills in a, b and the parallel pair c/d (the reconciler's limit is 3 per run).
    first = stack.submit("durable", {"seconds": 2, "tokens": TOKENS})
    for stage in ("a", "b", "c"):
        kill_during(stack, first, stage)
    check_completed_once(stack, first, resumes=3)
    killed = {t: m for t, m in unacked_messages(stack).items() if t not in before}
    assert len(killed) >= 3  # the killed deliveries, never acknowledged

    # Run 2: kills in e and f; the second killed message is redelivered while the resumed
    # run is already rerunning its stage (a broker that redelivers on disconnect does this).
    second = stack.submit("durable", {"seconds": 2, "tokens": TOKENS})
    kill_during(stack, second, "e")
    kill_during(stack, second, "f")
    stale = [t for t in unacked_messages(stack) if t not in before and t not in killed]
    stack.wait_resumed(second, 2)
    stack.wait_running(second, "f", after_s=0.1)  # f runs again in the resumed run
    redeliver(stack, stale)
    check_completed_once(stack, second, resumes=2)

    # Run 1's killed messages come back after the fact (the visibility timeout passed).
    rows_before = rows_of(stack, first)
    redeliver(stack, list(killed))
    wait_broker_idle(stack)
    assert rows_of(stack, first) == rows_before
    assert stack.usage_rows_per_stage(first) == {f"{first}.{s}": 1 for s in STAGES}
    stack.assert_nothing_held()
    assert stack.usage_totals() == {"openai_api": pytest.approx(2 * len(STAGES) * TOKENS)}


def test_a_stage_that_is_not_idempotent_is_never_rerun_on_its_own(fresh: Stack) -> None:
    """Its worker died while it ran: it may have done its work (sent the e-mails), so the
    reconciler fails the run with the reason instead of resuming it."""
    stack = fresh
    execution_id = stack.submit("once", {"seconds": 3})
    kill_during(stack, execution_id, "send")
    execution = stack.wait(execution_id)
    assert execution.status == ExecutionStatus.FAILED
    assert execution.error and "send is not idempotent" in execution.error
    assert execution.resume_count == 0
    starts = [
        e
        for _, e in stack.events(execution_id)
        if e.get("stage") == "send" and e.get("status") == "running"
    ]
    assert len(starts) == 1  # started once, never again
    stack.assert_nothing_held()

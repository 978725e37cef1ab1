"""Recovery in this process: a resume asked for, and the reconciler closing the gaps a dead
process leaves (a lost finish, a lost launch). The test calls ``recovery.reconcile`` itself."""

from __future__ import annotations

from typing import Any

import pytest
from celery.result import AsyncResult

from orchestrator import template_registry
from orchestrator.constants import ExecutionStatus, Priority, StageStatus
from orchestrator.core.quota import run_needs
from orchestrator.db import StageExecution
from orchestrator.engine import coordinator, recovery
from orchestrator.engine.canvas import finish_task_id
from orchestrator.engine.run_state import RunState
from orchestrator.runtime import Runtime
from tests.engine.conftest import WAIT_S, Engine, wait_until

CHECKPOINTS = ["first", "prepare"]
RERUN = ["broken", "after", "join"]


def checkpoint(row: StageExecution) -> tuple[Any, ...]:
    """What a checkpoint keeps untouched through a resume."""
    return (row.status, row.task_id, row.completed_at, row.attempts, row.data_reference)


def test_a_failed_run_resumed_with_new_parameters_reruns_only_what_failed(
    fresh: Engine,
) -> None:
    """Checkpoints (completed stages whose outputs are still stored) keep their rows and are
    not charged again; the failed stage and everything downstream of it run anew."""
    execution_id = fresh.submit("fixable")
    failed = fresh.wait(execution_id)
    assert failed.status == ExecutionStatus.FAILED
    assert failed.error == "broken: not ok"
    rows = fresh.stages(execution_id)
    assert rows["broken"].status == StageStatus.FAILED
    assert rows["after"].status in {StageStatus.SKIPPED, StageStatus.CANCELLED}
    before = {s: checkpoint(rows[s]) for s in CHECKPOINTS}
    fresh.assert_nothing_held()

    assert recovery.resume(fresh.runtime, execution_id, parameters={"ok": True}) == RERUN
    resumed = fresh.wait(execution_id)

    assert resumed.status == ExecutionStatus.COMPLETED, resumed.error
    assert resumed.resume_count == 1 and resumed.parameters == {"ok": True}
    rows = fresh.stages(execution_id)
    assert {s: checkpoint(rows[s]) for s in CHECKPOINTS} == before
    for stage in RERUN:
        assert rows[stage].status == StageStatus.COMPLETED
        assert rows[stage].started_at > before["prepare"][2]
    # join = 100 + after (1 + broken 7) + prepare (5): the checkpoint's packet was seeded.
    assert fresh.output(rows["join"]) == {"total": 113}
    seen = fresh.events(execution_id)  # the resumed run's stream: a fresh one
    launched = [e["message"] for e in seen if e["type"] == "execution" and e["status"] == "running"]
    assert launched == ["started 3 stages (2 from checkpoints)"]
    started = {e["stage"] for e in seen if e.get("type") == "stage" and e["status"] == "running"}
    assert started == set(RERUN)
    assert fresh.usage_rows(execution_id) == {f"{execution_id}.first": 1}
    fresh.assert_nothing_held()


def age(engine: Engine, execution_id: str, by_ms: int) -> None:
    """Move the run's live stage records ``by_ms`` into the past: what the reconciler sees
    once that much time went by with nobody touching the run."""
    state = RunState(engine.runtime.redis)
    for stage_id, record in state.stages(execution_id).items():
        for moment in ("started_at", "completed_at"):
            if record.get(moment):
                record[moment] -= by_ms
        state.record(execution_id, stage_id, record)


def test_the_reconciler_finishes_a_run_whose_finish_was_lost(fresh: Engine) -> None:
    """The coordinator that took the run's finish died in it: the canvas's own finish finds
    the claim taken and closes nothing; the reconciler finishes the run once its stages have
    been quiet for two lease periods, and not before."""
    execution_id = fresh.submit("durable", {"seconds": 0.1, "tokens": 10})
    state = RunState(fresh.runtime.redis)
    launch = wait_until(lambda: state.meta(execution_id).get("launch"), "the run launched")
    assert state.claim_finish(execution_id)  # the finisher that will die holds the claim

    # The canvas's finish task ran and, finding the claim taken, left the run running.
    finished = AsyncResult(finish_task_id(execution_id, launch), app=fresh.app)
    assert finished.get(timeout=WAIT_S) == ExecutionStatus.RUNNING
    assert {r["status"] for r in fresh.live(execution_id).values()} == {StageStatus.COMPLETED}
    assert len(fresh.live(execution_id)) == 6
    assert recovery.reconcile(fresh.runtime)["finished"] == 0  # ended just now: not lost yet
    assert coordinator.load(fresh.runtime, execution_id).status == ExecutionStatus.RUNNING

    age(fresh, execution_id, 2 * fresh.runtime.admission.lease_ttl_ms + 1000)
    assert recovery.reconcile(fresh.runtime)["finished"] == 1

    execution = fresh.wait(execution_id)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert {r.status for r in fresh.stages(execution_id).values()} == {StageStatus.COMPLETED}
    assert fresh.usage_rows(execution_id) == {f"{execution_id}.{s}": 1 for s in "abcdef"}
    fresh.assert_nothing_held()


def test_the_reconciler_launches_a_run_admitted_but_never_launched(
    fresh: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process that admitted the run died before sending its launch: the reservation
    waits in admission's admitted set, and the reconciler launches the run after the grace
    (a launch merely late is left alone)."""
    # The submitting process's start message is lost: its broker is a memory transport that
    # no worker reads, as a message that never left a dying process.
    lost = Runtime(fresh.settings.with_overrides(broker_url="memory://"))
    execution, _ = coordinator.submit(lost, "delivering", {"tokens": 1000})
    execution_id = execution.execution_id
    _, stages = template_registry.prepare(fresh.runtime, "delivering", {"tokens": 1000})
    decision = fresh.runtime.admission.reserve(
        execution_id, run_needs(stages, fresh.runtime.unusable), Priority.NORMAL
    )
    assert decision.status == "admitted"
    # ... and here the admitting coordinator dies, before ``launch``.
    snapshot = fresh.runtime.admission.snapshot()
    assert (snapshot["leases"], snapshot["admitted_runs"]) == (1, 1)
    assert snapshot["resources"]["openai_api"]["reserved"] == 2000

    assert recovery.reconcile(fresh.runtime)["relaunched"] == 0  # within the grace
    assert coordinator.load(fresh.runtime, execution_id).status == ExecutionStatus.PENDING
    monkeypatch.setattr(recovery, "LAUNCH_GRACE_MS", 0)
    assert recovery.reconcile(fresh.runtime)["relaunched"] == 1

    execution = fresh.wait(execution_id)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert execution.resume_count == 0
    assert fresh.stages(execution_id)["write"].status == StageStatus.COMPLETED
    fresh.assert_nothing_held()
    used = fresh.runtime.admission.snapshot()["resources"]["openai_api"]["used_today"]
    assert used == pytest.approx(1000)
    lost.close()

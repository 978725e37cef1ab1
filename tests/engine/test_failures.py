"""Runs that end early: a failing stage, a cancel. Whatever ends a run releases everything."""

from __future__ import annotations

from orchestrator.constants import ExecutionStatus, StageStatus
from orchestrator.engine import coordinator
from tests.engine.conftest import Engine, wait_until


def test_a_failing_stage_fails_the_run_with_its_reason_and_releases_everything(
    fresh: Engine,
) -> None:
    """A permanent failure is not retried past its policy, nothing downstream of it runs,
    and the run's reason names the stage and its error."""
    execution_id = fresh.submit("failing", {"message": "the provider refused"})
    execution = fresh.wait(execution_id)

    assert execution.status == ExecutionStatus.FAILED
    assert execution.error == "broken: the provider refused"
    rows = fresh.stages(execution_id)
    assert rows["first"].status == StageStatus.COMPLETED
    assert rows["broken"].status == StageStatus.FAILED
    assert rows["broken"].error == "the provider refused"
    assert rows["broken"].attempts == 1
    assert rows["after"].status in {StageStatus.SKIPPED, StageStatus.CANCELLED}
    assert rows["after"].time_ms is None  # never ran its function
    final = fresh.events(execution_id)[-1]
    assert (final["type"], final["status"]) == ("final", "failed")
    assert final["message"] == "broken: the provider refused"
    fresh.assert_nothing_held()


def test_cancel_of_a_running_run_stops_it_and_releases_everything(fresh: Engine) -> None:
    """Cancel closes the run at once (``finish`` in the caller); the chain's next stages,
    arriving afterwards, see the run halted and never run."""
    execution_id = fresh.submit("durable", {"seconds": 0.4, "tokens": 50})
    fresh.wait_stage(execution_id, "a", StageStatus.RUNNING)
    snapshot = fresh.runtime.admission.snapshot()
    assert snapshot["leases"] == 1
    assert snapshot["resources"]["openai_api"]["reserved"] == 6 * 200

    assert coordinator.cancel(fresh.runtime, execution_id) == ExecutionStatus.CANCELLED
    execution = fresh.wait(execution_id)
    assert execution.status == ExecutionStatus.CANCELLED
    assert execution.error == "cancelled by request"
    rows = fresh.stages(execution_id)
    assert {row.status for row in rows.values()} == {StageStatus.CANCELLED}
    fresh.assert_nothing_held()

    # The chain's later messages still arrive, find the run halted and run nothing. (This
    # pool cannot terminate the running ``a``: it naps to its end and is charged for it.)
    wait_until(fresh.idle, "the embedded worker idle")
    live = fresh.live(execution_id)
    # Whether they arrive at all depends on the pool: Celery does not chain on from a task
    # it revoked. Those that do arrive run nothing.
    assert set(live) <= set("abcdef")
    for stage in set(live) - {"a"}:
        assert live[stage]["status"] == StageStatus.CANCELLED
        assert live[stage]["reason"] == "the run was stopped"
        assert "started_at" not in live[stage]
    assert fresh.usage_rows(execution_id) == {f"{execution_id}.a": 1}
    assert coordinator.load(fresh.runtime, execution_id).status == ExecutionStatus.CANCELLED
    fresh.assert_nothing_held()


def test_no_event_follows_the_final_one_after_a_cancel(fresh: Engine) -> None:
    """SSE followers stop at the final event and ``Last-Event-ID`` replays what follows
    it: a run's stream must end with it, as ``run_stage`` intends for stages that start
    after the finish (``quiet``)."""
    execution_id = fresh.submit("durable", {"seconds": 0.2, "tokens": 1})
    fresh.wait_stage(execution_id, "a", StageStatus.RUNNING)
    coordinator.cancel(fresh.runtime, execution_id)
    wait_until(fresh.idle, "the embedded worker idle")
    assert fresh.events(execution_id)[-1]["type"] == "final"

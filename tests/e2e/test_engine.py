"""The engine end to end: real worker processes, real Redis, PostgreSQL and S3."""

from __future__ import annotations

from orchestrator.constants import ExecutionStatus, StageStatus
from orchestrator.engine.run_state import RunState
from tests.e2e.conftest import Runner


def test_linear_five_stages(runner: Runner) -> None:
    execution, seen = runner.run("linear5", {"start": 10})
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    stages = runner.stages(execution.execution_id)
    assert [stages[f"s{i}"].status for i in range(1, 6)] == [StageStatus.COMPLETED] * 5
    last = stages["s5"]
    assert last.data_reference["storage_type"] == "redis"
    assert last.summary_data["continue"] is True
    output = runner.runtime.outputs.read(
        __import__("orchestrator.core.handshake", fromlist=["DataRef"]).DataRef.model_validate(
            last.data_reference
        )
    )
    assert output == {"total": 14}
    order = [s.stage_order for s in sorted(stages.values(), key=lambda s: s.stage_order)]
    assert order == [0, 1, 2, 3, 4]
    assert all(s.started_at and s.completed_at and s.time_ms is not None for s in stages.values())
    assert seen[-1]["type"] == "final" and seen[-1]["status"] == "completed"
    assert execution.total_time_ms is not None and execution.completed_at is not None


def test_diamond_runs_both_branches_and_joins(runner: Runner) -> None:
    execution, _ = runner.run("diamond")
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    packets = RunState(runner.runtime.redis).packets(execution.execution_id)
    from orchestrator.core.handshake import DataRef

    final = runner.runtime.outputs.read(DataRef.model_validate(packets["d"]["data_ref"]))
    assert final == {"total": 1000 + 11 + 101}


def test_fan_out_of_twenty_and_fan_in(runner: Runner) -> None:
    execution, _ = runner.run("fanout", {"width": 20})
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    stages = runner.stages(execution.execution_id)
    assert len(stages) == 22
    assert all(s.status == StageStatus.COMPLETED for s in stages.values())
    packets = RunState(runner.runtime.redis).packets(execution.execution_id)
    from orchestrator.core.handshake import DataRef

    assert runner.runtime.outputs.read(DataRef.model_validate(packets["sink"]["data_ref"])) == {
        "total": 20 * 2
    }


def test_failing_stage_fails_the_run_and_nothing_after_it_runs(runner: Runner) -> None:
    execution, seen = runner.run("failing", {"message": "the provider refused"})
    assert execution.status == ExecutionStatus.FAILED
    assert "broken: the provider refused" in execution.error
    stages = runner.stages(execution.execution_id)
    assert stages["first"].status == StageStatus.COMPLETED
    assert stages["broken"].status == StageStatus.FAILED
    assert stages["broken"].error == "the provider refused"
    assert stages["after"].status in {StageStatus.SKIPPED, StageStatus.CANCELLED}
    assert stages["after"].started_at is None or stages["after"].time_ms is None
    assert seen[-1] == {**seen[-1], "type": "final", "status": "failed"}
    snapshot = runner.runtime.admission.snapshot()
    assert snapshot["leases"] == 0
    assert all(w["active"] == 0 for w in snapshot["worker_capacity"].values())


def test_continue_false_stops_its_branch_cleanly(runner: Runner) -> None:
    execution, _ = runner.run("stopping")
    assert execution.status == ExecutionStatus.STOPPED
    stages = runner.stages(execution.execution_id)
    assert stages["gate"].status == StageStatus.COMPLETED
    assert stages["gate"].summary_data["continue"] is False
    assert stages["gated"].status == StageStatus.SKIPPED
    assert "said continue: false" in stages["gated"].error
    assert stages["free"].status == StageStatus.COMPLETED

"""A permanent failure, fixed and resumed: only the failed stage and what depends on it rerun.

The checkpoints (stages that completed, outputs still there with their checksums) keep their
rows untouched: same attempts, same start and end, and their metered usage is not charged again.
"""

from __future__ import annotations

from typing import Any

from orchestrator import template_registry
from orchestrator.constants import ExecutionStatus, StageStatus
from orchestrator.core.handshake import DataRef
from orchestrator.engine import coordinator, recovery
from tests.durability.conftest import Stack

CHECKPOINTS = ["first", "prepare"]
RERUN = ["broken", "after", "join"]


def failed_run(stack: Stack) -> tuple[str, dict[str, Any]]:
    execution_id = stack.submit("fixable", {})
    execution = stack.wait(execution_id, reconcile=False)
    assert execution.status == ExecutionStatus.FAILED
    assert "broken: not ok" in execution.error
    rows = stack.stages(execution_id)
    assert rows["broken"].status == StageStatus.FAILED
    assert {rows[s].status for s in CHECKPOINTS} == {StageStatus.COMPLETED}
    assert rows["after"].status in {StageStatus.SKIPPED, StageStatus.CANCELLED}
    stack.assert_nothing_held()
    return execution_id, {s: checkpoint(rows[s]) for s in CHECKPOINTS}


def checkpoint(row: Any) -> tuple[Any, ...]:
    return (
        row.status,
        row.attempts,
        row.task_id,
        row.started_at,
        row.completed_at,
        row.data_reference,
    )


def check_resumed(stack: Stack, execution_id: str, before: dict[str, Any], total: int) -> None:
    execution = stack.wait(execution_id, reconcile=False)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert execution.resume_count == 1
    rows = stack.stages(execution_id)
    assert {s: checkpoint(rows[s]) for s in CHECKPOINTS} == before
    failed_at = max(before[s][4] for s in CHECKPOINTS)
    for stage in RERUN:
        assert rows[stage].status == StageStatus.COMPLETED
        assert rows[stage].started_at > failed_at
    join = stack.runtime.outputs.read(DataRef.model_validate(rows["join"].data_reference))
    assert join == {"total": total}
    # The resumed run started only what it reran, and said so.
    seen = [e for _, e in stack.events(execution_id)]
    assert "2 from checkpoints" in seen[0]["message"]
    started = {e["stage"] for e in seen if e.get("type") == "stage" and e["status"] == "running"}
    assert started == set(RERUN)
    # The checkpointed metered stage was charged once, in the first launch.
    assert stack.usage_rows_per_stage(execution_id) == {f"{execution_id}.first": 1}
    stack.assert_nothing_held()


def test_fixed_by_new_parameters(fresh: Stack) -> None:
    execution_id, before = failed_run(fresh)
    rerun = recovery.resume(fresh.runtime, execution_id, parameters={"ok": True})
    assert rerun == RERUN
    # join = 100 + after (1 + broken 7) + prepare (5)
    check_resumed(fresh, execution_id, before, total=113)


def test_fixed_by_new_template_version(fresh: Stack) -> None:
    execution_id, before = failed_run(fresh)
    source = (fresh.settings.templates_dir / "fixable.yaml").read_text()
    fixed = source.replace("worker: fail, action: unless", "worker: sum, action: add")
    row, added = template_registry.put(
        fresh.runtime.db,
        template_registry.parse_yaml(fixed),
        {w.name: list(w.actions) for w in fresh.runtime.registry},
    )
    assert added and row.version == 2
    assert recovery.resume(fresh.runtime, execution_id) == RERUN
    # broken now adds: 7 + prepare 5 = 12; after = 13; join = 100 + 13 + 5
    check_resumed(fresh, execution_id, before, total=118)
    rows = fresh.stages(execution_id)
    assert (rows["broken"].worker_name, rows["broken"].action) == ("sum", "add")
    assert coordinator.load(fresh.runtime, execution_id).template_version == 2

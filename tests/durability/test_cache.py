"""The result cache: a hit skips the stage and costs nothing; a changed input misses."""

from __future__ import annotations

from orchestrator.constants import ExecutionStatus, StageStatus
from orchestrator.core.handshake import DataRef
from tests.durability.conftest import Stack


def run(stack: Stack, value: int) -> str:
    execution_id = stack.submit("cached", {"value": value})
    execution = stack.wait(execution_id, reconcile=False)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    return execution_id


def test_hit_costs_nothing_and_a_changed_input_misses(fresh: Stack) -> None:
    stack = fresh
    price = stack.runtime.pool.price("openai_api")
    first = run(stack, 1)
    heavy = stack.stages(first)["heavy"]
    assert (heavy.status, heavy.cache_hit) == (StageStatus.COMPLETED, False)
    assert heavy.cost_usd == 500 * price

    # Same input: the stage is skipped, free, and says so in its row and its events.
    second = run(stack, 1)
    rows = stack.stages(second)
    assert (rows["heavy"].status, rows["heavy"].cache_hit) == (StageStatus.CACHED, True)
    assert rows["heavy"].cost_usd == 0
    assert rows["heavy"].data_reference == heavy.data_reference  # the cached output itself
    assert rows["tail"].status == StageStatus.COMPLETED  # what follows runs on the cached output
    seen = [e for _, e in stack.events(second) if e.get("stage") == "heavy"]
    assert [e["status"] for e in seen] == ["cached"]
    assert "cache hit" in seen[0]["message"]
    assert stack.usage_rows_per_stage(second) == {}
    assert stack.runtime.admission.snapshot()["resources"]["openai_api"]["used_today"] == 500

    # A changed input (source's output) changes the key: the stage runs and is charged.
    third = run(stack, 2)
    rows = stack.stages(third)
    assert (rows["heavy"].status, rows["heavy"].cache_hit) == (StageStatus.COMPLETED, False)
    assert rows["heavy"].cost_usd == 500 * price
    output = stack.runtime.outputs.read(DataRef.model_validate(rows["heavy"].data_reference))
    assert output["inputs"] == ["source"]
    assert stack.usage_rows_per_stage() == {f"{first}.heavy": 1, f"{third}.heavy": 1}
    stack.assert_nothing_held()

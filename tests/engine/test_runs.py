"""Runs that go their whole way: the stage runner, the canvas and ``finish`` in this process."""

from __future__ import annotations

from orchestrator.constants import ExecutionStatus, StageStatus
from orchestrator.engine.run_state import RunState
from tests.engine.conftest import Engine


def test_a_linear_run_completes_with_its_rows_and_packets(fresh: Engine) -> None:
    """Each stage reads its upstream's output by reference: the totals prove the chain
    carried packets, and ``finish`` copied every live record into the database."""
    execution_id = fresh.submit("linear5", {"start": 10})
    execution = fresh.wait(execution_id)

    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert execution.completed_at is not None and execution.total_time_ms is not None
    rows = fresh.stages(execution_id)
    assert [rows[f"s{i}"].status for i in range(1, 6)] == [StageStatus.COMPLETED] * 5
    assert [rows[f"s{i}"].stage_order for i in range(1, 6)] == [0, 1, 2, 3, 4]
    assert [fresh.output(rows[f"s{i}"])["total"] for i in range(1, 6)] == [10, 11, 12, 13, 14]
    for row in rows.values():
        assert row.attempts == 1 and row.error is None
        assert row.started_at is not None and row.completed_at >= row.started_at
        assert row.summary_data["continue"] is True
    packets = RunState(fresh.runtime.redis).packets(execution_id)
    assert packets["s5"]["pipeline_id"] == execution_id
    assert packets["s5"]["data_ref"] == rows["s5"].data_reference
    assert fresh.events(execution_id)[-1] == {
        **fresh.events(execution_id)[-1],
        "type": "final",
        "status": "completed",
    }
    fresh.assert_nothing_held()


def test_a_diamond_joins_both_branches(fresh: Engine) -> None:
    """The join reads both branches' packets from a chord: 1000 + (1 + 10) + (1 + 100)."""
    execution_id = fresh.submit("diamond")
    execution = fresh.wait(execution_id)

    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    rows = fresh.stages(execution_id)
    assert {name: row.status for name, row in rows.items()} == dict.fromkeys(
        "abcd", StageStatus.COMPLETED
    )
    assert fresh.output(rows["d"]) == {"total": 1000 + 11 + 101}
    # Both branches ran after their source and before the join.
    for branch in "bc":
        assert rows["a"].completed_at <= rows[branch].started_at
        assert rows[branch].completed_at <= rows["d"].started_at
    fresh.assert_nothing_held()


def test_a_join_inside_a_branch_of_another_fan_out(fresh: Engine) -> None:
    """Chains inside groups inside a chain: each group that something follows becomes a
    chord when the canvas is applied, at every depth. e = 1000000 + d1 + b2, where
    d1 = 10000 + (11 + 100) + (11 + 1000) and b2 = 100000 + 1."""
    execution_id = fresh.submit("nested")
    execution = fresh.wait(execution_id)

    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    rows = fresh.stages(execution_id)
    assert all(row.status == StageStatus.COMPLETED for row in rows.values())
    assert all(row.attempts == 1 for row in rows.values())
    assert fresh.output(rows["d1"]) == {"total": 10000 + 111 + 1011}
    assert fresh.output(rows["e"]) == {"total": 1000000 + 11122 + 100001}
    for before, after in (("b1", "c1"), ("b1", "c2"), ("c1", "d1"), ("c2", "d1"), ("d1", "e")):
        assert rows[before].completed_at <= rows[after].started_at
    fresh.assert_nothing_held()


def test_a_fan_out_wider_than_capacity_joins_every_shard_once(fresh: Engine) -> None:
    """Eight shards on a worker type allowed four at a time: shards that wait for a capacity
    slot are retried without spending an attempt, and the sink sums every shard exactly once."""
    width = 8
    execution_id = fresh.submit("fanout", {"width": width})
    execution = fresh.wait(execution_id)

    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    rows = fresh.stages(execution_id)
    shards = {f"branch-{i}" for i in range(width)}
    assert set(rows) == {"source", "sink"} | shards
    assert all(row.status == StageStatus.COMPLETED for row in rows.values())
    assert all(row.attempts == 1 for row in rows.values())
    assert fresh.output(rows["sink"]) == {"total": width * 2}
    fresh.assert_nothing_held()


def test_continue_false_stops_its_branch_and_the_run_cleanly(fresh: Engine) -> None:
    """A stage that says ``continue: false`` skips what depends on it, not its sibling
    branch, and the run ends ``stopped`` (not failed) with nothing held."""
    execution_id = fresh.submit("stopping")
    execution = fresh.wait(execution_id)

    assert execution.status == ExecutionStatus.STOPPED, execution.error
    rows = fresh.stages(execution_id)
    assert rows["gate"].status == StageStatus.COMPLETED
    assert rows["gate"].summary_data["continue"] is False
    assert rows["gated"].status == StageStatus.SKIPPED
    assert "said continue: false" in rows["gated"].error
    assert rows["gated"].data_reference["storage_type"] == "none"
    assert rows["free"].status == StageStatus.COMPLETED
    assert fresh.events(execution_id)[-1]["status"] == "stopped"
    fresh.assert_nothing_held()

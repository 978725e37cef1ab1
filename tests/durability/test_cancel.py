"""Cancellation revokes the running task and leaves nothing reserved."""

from __future__ import annotations

import time

from celery.result import AsyncResult

from orchestrator.constants import ExecutionStatus, StageStatus
from orchestrator.engine import coordinator
from tests.durability.conftest import Stack


def test_cancel_revokes_the_running_stage_and_releases_everything(fresh: Stack) -> None:
    stack = fresh
    execution_id = stack.submit("durable", {"seconds": 60})
    stack.wait_running(execution_id, "a")
    task_id = stack.live(execution_id)["a"]["task_id"]
    snapshot = stack.runtime.admission.snapshot()
    assert snapshot["leases"] == 1 and snapshot["resources"]["openai_api"]["reserved"] == 1200

    assert coordinator.cancel(stack.runtime, execution_id) == ExecutionStatus.CANCELLED
    execution = stack.wait(execution_id, reconcile=False)
    assert execution.status == ExecutionStatus.CANCELLED
    rows = stack.stages(execution_id)
    assert {r.status for r in rows.values()} == {StageStatus.CANCELLED}

    # The task was terminated, not left to sleep out its minute.
    sleep_node = next(n for n in stack.fleet.node_names() if n.startswith("sleep@"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        active = stack.app.control.inspect(destination=[sleep_node], timeout=2).active() or {}
        state = AsyncResult(task_id, app=stack.app).state
        if state == "REVOKED" and active.get(sleep_node) == []:
            break
        time.sleep(0.5)
    assert (state, active.get(sleep_node)) == ("REVOKED", [])
    stack.assert_nothing_held()
    assert stack.usage_totals() == {}
    assert stack.final_event(execution_id)["status"] == "cancelled"

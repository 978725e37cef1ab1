"""A coordinator that dies inside ``finish``: the reconciler finishes the run for it."""

from __future__ import annotations

import time

from orchestrator.constants import STAGE_ENDED, ExecutionStatus
from orchestrator.engine import coordinator
from orchestrator.engine.run_state import RunState
from tests.durability.conftest import Stack


def test_a_run_whose_finish_was_lost_is_finished_by_the_reconciler(fresh: Stack) -> None:
    stack = fresh
    execution_id = stack.submit("durable", {"seconds": 0.4})
    stack.wait_running(execution_id, "a", after_s=0)
    # The coordinator that will take the run's finish dies in it: the claim is taken and
    # nothing else happens, so the canvas's own finish task finds it taken and does nothing.
    assert RunState(stack.runtime.redis).claim_finish(execution_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = stack.live(execution_id)
        if len(live) == 6 and all(r.get("status") in STAGE_ENDED for r in live.values()):
            break
        time.sleep(0.2)
    time.sleep(1.0)  # the canvas's finish task has run by now, and closed nothing
    assert coordinator.load(stack.runtime, execution_id).status == ExecutionStatus.RUNNING

    execution = stack.wait(execution_id, timeout_s=60)  # reconciles about once a second
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert stack.final_event(execution_id)["status"] == "completed"
    rows = stack.usage_rows_per_stage(execution_id)
    assert rows == {f"{execution_id}.{stage}": 1 for stage in "abcdef"}
    stack.assert_nothing_held()

"""Redis restarted in the middle of a run (without persistence: everything in it is lost).

The broker's queues, the run's live state, its small outputs and its leases go with it. The
workers reconnect; the reconciler finds a running execution without live state and resumes it;
stages rerun where their checkpoint is gone, and none is charged twice in the ledger.
"""

from __future__ import annotations

import time

from orchestrator.constants import ExecutionStatus, StageStatus
from tests.durability.conftest import Stack

STAGES = ["a", "b", "c", "d", "e", "f"]


def test_redis_restart_mid_run_is_resumed_to_completion(fresh: Stack) -> None:
    stack = fresh
    execution_id = stack.submit("durable", {"seconds": 4})  # b runs long enough to be seen
    stack.wait_running(execution_id, "b")
    stack.redis_server.kill()
    time.sleep(1)
    stack.redis_server.start()  # same port, empty

    execution = stack.wait(execution_id, timeout_s=180)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert execution.resume_count >= 1
    rows = stack.stages(execution_id)
    assert {s: rows[s].status for s in STAGES} == {s: StageStatus.COMPLETED for s in STAGES}
    assert stack.usage_rows_per_stage(execution_id) == {f"{execution_id}.{s}": 1 for s in STAGES}
    # The quota counters lived in the Redis that was lost: they were rebuilt from the ledger,
    # and a stage that settled before the restart and ran again is not counted twice.
    stack.assert_nothing_held()

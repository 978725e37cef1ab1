"""Object storage stopped for 20 s in the middle of a run: the stage retries, the run completes."""

from __future__ import annotations

import time

from orchestrator.constants import ExecutionStatus, StageStatus
from orchestrator.core.handshake import DataRef
from tests.durability.conftest import Stack

OUTAGE_S = 20


def test_storage_outage_is_retried_through(fresh: Stack) -> None:
    stack = fresh
    execution_id = stack.submit("outage", {"seconds": 2})
    stack.wait_running(execution_id, "nap")
    stack.s3.stop()
    stopped = time.monotonic()
    # blob1 writes its megabyte to storage, fails, and backs off (the run stays running).
    while stack.live(execution_id).get("blob1", {}).get("status") != "retrying":
        assert time.monotonic() - stopped < OUTAGE_S, stack.live(execution_id)
        time.sleep(0.2)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
    stack.s3.start(stack.s3_ready)

    execution = stack.wait(execution_id, reconcile=False)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    rows = stack.stages(execution_id)
    assert {r.status for r in rows.values()} == {StageStatus.COMPLETED}
    assert rows["blob1"].attempts > 1
    retries = [
        e
        for _, e in stack.events(execution_id)
        if e.get("stage") == "blob1" and e.get("status") == "retrying"
    ]
    assert retries and all("unreachable" in e["message"] for e in retries)
    for stage in ("blob1", "blob2"):  # outputs in storage, whole (checksums verified)
        ref = DataRef.model_validate(rows[stage].data_reference)
        assert ref.storage_type == "s3"
        assert len(stack.runtime.outputs.read(ref)) == 2**20
    stack.assert_nothing_held()

"""Stalls are found within a lease period; a backlog is not a stall.

A worker that took a stage's message and died before starting it leaves the message
unacknowledged: the Redis broker gives it back only after its visibility timeout (hours). The
reconciler sees a run where nothing moved for a lease period, nothing runs and nothing is
queued for its next stage, and resumes it. A run whose next stage waits in a queue that no
worker serves right now is only waiting its turn: it is left alone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from orchestrator.constants import ExecutionStatus
from orchestrator.engine import coordinator, recovery
from tests.durability.conftest import Stack, redeliver, wait_broker_idle

#: A "worker" that takes one message from a queue without acknowledging it, then waits to
#: be SIGKILLed: the message stays in the broker's unacked set, as a dead worker's does.
GRAB = """
import sys, time
from kombu import Connection
with Connection(sys.argv[1]) as conn:
    queue = conn.SimpleQueue(sys.argv[2], no_ack=False)
    message = queue.get(timeout=60)
    print(message.payload and "got", flush=True)
    time.sleep(3600)
"""


def reconcile_until(stack: Stack, done: Any, timeout_s: float) -> dict[str, int]:
    """Reconcile about once a second (as beat would, without reviving workers) until
    ``done()``; returns the summed counts."""
    totals: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for case, n in recovery.reconcile(stack.runtime).items():
            totals[case] = totals.get(case, 0) + n
        if done():
            return totals
        time.sleep(1)
    return totals


def test_a_message_lost_with_a_worker_that_never_started_it_is_relaunched(fresh: Stack) -> None:
    stack = fresh
    stack.kill_worker("sum")  # nobody consumes the sum queue while the message is grabbed
    execution_id = stack.submit("linear5", {"start": 1})
    grabber = subprocess.Popen(
        [sys.executable, "-c", GRAB, stack.settings.broker_url, "sum"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert grabber.stdout is not None and grabber.stdout.readline().strip() == b"got"
    finally:
        grabber.send_signal(signal.SIGKILL)
        grabber.wait(10)
    assert stack.runtime.redis.hlen("unacked") >= 1  # held for the visibility timeout
    stack.start_worker("sum")

    def ended() -> bool:
        return ExecutionStatus(coordinator.load(stack.runtime, execution_id).status).terminal

    counts = reconcile_until(stack, ended, timeout_s=120)
    assert counts.get("stalled", 0) >= 1, counts
    execution = stack.wait(execution_id, reconcile=False)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert execution.resume_count == 1

    # Hours later the broker gives the message back: it belongs to a launch the run was
    # resumed past, and changes nothing.
    redeliver(stack, [t.decode() for t in stack.runtime.redis.hkeys("unacked")])
    wait_broker_idle(stack)
    assert coordinator.load(stack.runtime, execution_id).status == ExecutionStatus.COMPLETED
    stack.assert_nothing_held()


def test_a_run_queued_behind_a_missing_worker_is_not_a_stall(fresh: Stack) -> None:
    stack = fresh
    stack.kill_worker("sum")
    execution_id = stack.submit("linear5", {"start": 1})
    lease_s = stack.runtime.admission.lease_ttl_ms / 1000
    started = time.monotonic()
    counts = reconcile_until(stack, lambda: time.monotonic() - started > 3 * lease_s, 60)
    assert counts.get("stalled", 0) == 0 and counts.get("resumed", 0) == 0, counts
    assert coordinator.load(stack.runtime, execution_id).status == ExecutionStatus.RUNNING

    stack.start_worker("sum")
    execution = stack.wait(execution_id)
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.resume_count == 0
    stack.assert_nothing_held()

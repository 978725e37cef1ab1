"""No accepted run is ever lost: bursts through the API with cancels and a worker kill.

Runs are posted at once from many threads to a real ``orchestrator api``; about 16 of them fit
the ``openai_api`` quota at a time, so most wait for admission and are handed on as others
finish or are cancelled. Meanwhile some runs are cancelled at random, the sleep worker is
SIGKILLed and restarted, the pool is read (``GET /resources``, which once admitted runs and
dropped them) and every run's status is sampled through the API. In the end every accepted
run is completed or cancelled (or failed with a reason), no sampled status ever went from
terminal back to anything else, nothing stays reserved, leased or queued, and the quota
counters equal the ledger. ``make soak`` runs the same with 1,000 runs.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import httpx
import pytest

from orchestrator.auth import Scope, create_key
from orchestrator.constants import REDIS_PREFIX, ExecutionStatus
from orchestrator.engine import coordinator, recovery
from orchestrator.engine.admission import ADMITTED_KEY
from orchestrator.errors import ResourceExhausted
from tests.durability.conftest import OUTAGE_ERRORS, Stack

TERMINAL = {s.value for s in ExecutionStatus if s.terminal}


class Burst:
    """Posts, cancels and samples through the API; remembers every status it saw."""

    def __init__(self, url: str, key: str, admin_key: str) -> None:
        self.http = httpx.Client(
            base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}
        )
        self.monitor = httpx.Client(
            base_url=url, timeout=60, headers={"Authorization": f"Bearer {admin_key}"}
        )
        self.accepted: list[str] = []
        self.seen: dict[str, list[str]] = defaultdict(list)
        self.cancelled: set[str] = set()
        self._lock = threading.Lock()

    def post(self, n: int) -> None:
        body = {
            "request_id": f"burst-{n}",
            "template_name": "burst",
            "parameters": {"topic": f"topic {n}"},
            "priority": random.choice(["high", "normal", "low"]),
        }
        response = self.http.post("/execute", json=body)
        assert response.status_code == 202, response.text
        with self._lock:
            self.accepted.append(response.json()["execution_id"])

    def cancel(self, execution_id: str) -> None:
        response = self.http.post(f"/executions/{execution_id}/cancel")
        assert response.status_code in {200, 409}, response.text  # 409: it ended first
        if response.status_code == 200:
            self.cancelled.add(execution_id)

    def sample(self) -> dict[str, str]:
        """Every run's status as the API reports it now (recorded in ``seen``)."""
        statuses: dict[str, str] = {}
        offset = 0
        while True:
            page = self.http.get("/executions", params={"limit": 500, "offset": offset}).json()
            statuses.update({item["execution_id"]: item["status"] for item in page["items"]})
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                break
        for execution_id, status in statuses.items():
            history = self.seen[execution_id]
            if not history or history[-1] != status:
                history.append(status)
        return statuses

    def read_pool(self) -> dict[str, Any]:
        response = self.monitor.get("/resources")
        assert response.status_code == 200, response.text
        return response.json()


def flips(history: list[str]) -> bool:
    """True if a terminal status was followed by any other."""
    return any(a in TERMINAL and b != a for a, b in pairwise(history))


def run_burst(stack: Stack, url: str, runs: int, *, cancels: float, timeout_s: float) -> Burst:
    rng = random.Random(runs)
    key = create_key(stack.runtime.db, Scope.CLIENT, client_id="bursty")
    admin = create_key(stack.runtime.db, Scope.ADMIN)
    burst = Burst(url, key, admin)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(burst.post, range(runs)))
    assert len(burst.accepted) == runs
    victims = rng.sample(burst.accepted, int(runs * cancels))
    killed = False
    deadline = time.monotonic() + timeout_s
    next_pass = 0.0
    while time.monotonic() < deadline:
        statuses = burst.sample()
        burst.read_pool()
        if victims:
            burst.cancel(victims.pop())
        if not killed and sum(s == "completed" for s in statuses.values()) >= runs // 4:
            stack.kill_worker("sleep")  # mid-burst: stages running, runs waiting
            time.sleep(2)
            stack.start_worker("sleep")
            killed = True
        if all(statuses.get(r) in TERMINAL for r in burst.accepted) and not victims:
            break
        if time.monotonic() >= next_pass:  # what `orchestrator beat` does every 15 s
            try:
                stack.revive()
                recovery.reconcile(stack.runtime)
            except OUTAGE_ERRORS:
                pass
            next_pass = time.monotonic() + 1.0
        time.sleep(0.1)
    return burst


def check_nothing_lost(stack: Stack, burst: Burst) -> None:
    statuses = burst.sample()
    stuck = {r: statuses.get(r) for r in burst.accepted if statuses.get(r) not in TERMINAL}
    assert not stuck, f"{len(stuck)} accepted runs never ended: {stuck}"
    for execution_id in burst.accepted:
        execution = coordinator.load(stack.runtime, execution_id)
        assert execution.status in {"completed", "cancelled", "failed"}, execution.status
        if execution.status == "failed":
            assert execution.error, f"{execution_id} failed without a reason"
        if execution.status == "cancelled":
            assert execution_id in burst.cancelled
        assert stack.final_event(execution_id) is not None
    flipped = {r: h for r, h in burst.seen.items() if flips(h)}
    assert not flipped, f"statuses went back from terminal: {flipped}"
    # One final event per run, and nothing after it says the run went on (a stage of a
    # cancelled run may still record its own cancellation).
    for execution_id in burst.accepted:
        seen = [e for _, e in stack.events(execution_id)]
        finals = [i for i, e in enumerate(seen) if e["type"] == "final"]
        assert len(finals) == 1, (execution_id, seen)
        after = seen[finals[0] + 1 :]
        assert all(e["status"] == "cancelled" for e in after), (execution_id, seen)
    stack.assert_nothing_held()
    assert stack.runtime.redis.zcard(REDIS_PREFIX + ADMITTED_KEY) == 0


def test_burst_of_60_with_cancels_and_a_worker_kill_loses_nothing(
    fresh: Stack, stack_api: str
) -> None:
    burst = run_burst(fresh, stack_api, 60, cancels=0.15, timeout_s=300)
    check_nothing_lost(fresh, burst)
    completed = [r for r in burst.accepted if burst.seen[r][-1] == "completed"]
    assert len(completed) >= 60 - len(burst.cancelled)  # no run failed in this burst


@pytest.mark.soak
def test_burst_of_1000_with_cancels_and_a_worker_kill_loses_nothing(
    fresh: Stack, stack_api: str
) -> None:
    started = time.monotonic()
    burst = run_burst(fresh, stack_api, 1000, cancels=0.05, timeout_s=3600)
    check_nothing_lost(fresh, burst)
    counts = defaultdict(int)
    for execution_id in burst.accepted:
        counts[burst.seen[execution_id][-1]] += 1
    print(
        f"\nsoak burst: {len(burst.accepted)} accepted, {dict(counts)}, lost 0, "
        f"{time.monotonic() - started:.0f} s"
    )


def test_cancelling_the_holder_launches_the_run_it_lets_in(fresh: Stack) -> None:
    """Run A holds most of the quota, B waits for it; cancelling A hands the units to B
    (no reconciler runs here: the cancel itself must launch B)."""
    stack = fresh
    holder = stack.submit("hog")
    stack.wait_running(holder, "a")
    waiting = stack.submit("burst", {"seconds": 0.1})
    pool = wait_for(lambda: stack.runtime.admission.snapshot(), lambda p: p["pending_runs"] == 1)
    assert pool["leases"] == 1
    assert coordinator.load(stack.runtime, waiting).status == ExecutionStatus.PENDING

    coordinator.cancel(stack.runtime, holder)
    execution = stack.wait(waiting, timeout_s=60, reconcile=False)
    assert execution.status == ExecutionStatus.COMPLETED
    assert coordinator.load(stack.runtime, holder).status == ExecutionStatus.CANCELLED
    stack.assert_nothing_held()


def test_quota_counters_survive_a_redis_restart_between_runs(fresh: Stack) -> None:
    """What was spent today is rebuilt from the ledger: a restart does not refill the quota."""
    stack = fresh
    spender = stack.submit("durable", {"seconds": 0.1, "tokens": 25_000})  # 150,000 used
    assert stack.wait(spender).status == ExecutionStatus.COMPLETED
    stack.redis_server.kill()
    stack.redis_server.start()  # same port, empty: counters, leases, queue all gone
    stack.reconnect()
    stack.ensure_workers()

    pool = stack.runtime.admission.snapshot()
    assert pool["resources"]["openai_api"]["used_today"] == pytest.approx(150_000)
    # 190,000 more would fit a forgotten counter; against the ledger's 150,000 it cannot fit
    # today whatever is released: refused at the door, told to come back tomorrow (UTC).
    with pytest.raises(ResourceExhausted) as refused:
        stack.submit("hog", {"seconds": 0.1})
    assert "openai_api: 50000 of 200000 left this day" in refused.value.message
    tomorrow = 86_400 - time.time() % 86_400
    assert refused.value.retry_after_s == pytest.approx(tomorrow, abs=5)
    stack.assert_nothing_held()


def wait_for(read: Any, ok: Any, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = read()
        if ok(value):
            return value
        time.sleep(0.1)
    raise TimeoutError(f"never true: {value}")

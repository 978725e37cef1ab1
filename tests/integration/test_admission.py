"""Admission on a real Redis: races across processes, leases that come back, priority,
exact refunds, cooldowns and capacity slots."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import redis

from orchestrator.constants import Priority
from orchestrator.core.resources import ResourcePool, parse_resources
from orchestrator.engine.admission import PRIORITY_RANK, Admission, RunNeeds
from orchestrator.settings import Settings

#: Fresh interpreters, not forks: a fork of the test process copies the locks its other threads
#: hold (an in-process worker's, a lease keeper's), and a child could wait on one forever.
MP = multiprocessing.get_context("spawn")

POOL = """
resources:
  tokens: {daily_limit: 500, monthly_limit: 100000, unit_price_usd: 0.001}
  calls: {rate_limit_per_minute: 120}
  big: {daily_limit: 1000}
workers:
  default_max_concurrent: 2
"""


def pool() -> ResourcePool:
    return parse_resources(POOL)


def _reserve_many(url: str, worker: int, count: int, results: multiprocessing.Queue) -> None:
    client = redis.Redis.from_url(url)
    admission = Admission(client, pool())
    admitted = 0
    lock = threading.Lock()

    def hammer(thread: int) -> None:
        nonlocal admitted
        for i in range(count // 8):
            decision = admission.reserve(
                f"run-{worker}-{thread}-{i}", RunNeeds({"tokens": 1}), Priority.NORMAL, wait=False
            )
            if decision.status == "admitted":
                with lock:
                    admitted += 1

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(admitted)


def test_ten_thousand_reservations_from_four_processes_admit_exactly_the_quota(
    settings: Settings, redis_client: redis.Redis
) -> None:
    results: multiprocessing.Queue = MP.Queue()
    processes = [
        MP.Process(target=_reserve_many, args=(settings.redis_url, w, 2500, results))
        for w in range(4)
    ]
    for p in processes:
        p.start()
    counts = [results.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(30)
    assert sum(counts) == 500, counts
    snapshot = Admission(redis_client, pool()).snapshot()
    assert snapshot["resources"]["tokens"]["reserved"] == 500
    assert snapshot["leases"] == 500


def _call_rate(
    url: str, seconds: float, results: multiprocessing.Queue, start: threading.Barrier
) -> None:
    admission = Admission(redis.Redis.from_url(url), pool())
    allowed = 0
    start.wait()  # all four call at once, however long each took to start
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if admission.acquire_rate("calls") == 0:
            allowed += 1
    results.put(allowed)


def test_rate_limit_holds_across_four_processes(
    settings: Settings, redis_client: redis.Redis
) -> None:
    results: multiprocessing.Queue = MP.Queue()
    start = MP.Barrier(5)
    processes = [
        MP.Process(target=_call_rate, args=(settings.redis_url, 1.0, results, start))
        for _ in range(4)
    ]
    for p in processes:
        p.start()
    start.wait(timeout=60)
    total = sum(results.get(timeout=60) for _ in processes)
    after = Admission(redis_client, pool())
    more = sum(after.acquire_rate("calls") == 0 for _ in range(20))  # the burst is spent
    for p in processes:
        p.join(10)
    # GCRA at 120/minute allows a burst of 120, then one call each 0.5 s.
    assert 120 <= total <= 123, total
    assert more <= 2, more


def _hold_and_wait(url: str, ready: Any) -> None:
    admission = Admission(redis.Redis.from_url(url), pool(), lease_ttl_s=1.5)
    decision = admission.reserve("doomed", RunNeeds({"tokens": 400}), Priority.NORMAL)
    assert decision.status == "admitted"
    ready.set()
    time.sleep(60)


def test_units_of_a_killed_holder_come_back_within_the_ttl(
    settings: Settings, redis_client: redis.Redis
) -> None:
    ready = MP.Event()
    holder = MP.Process(target=_hold_and_wait, args=(settings.redis_url, ready))
    holder.start()
    assert ready.wait(30)
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    admission = Admission(redis_client, pool(), lease_ttl_s=1.5)
    assert (
        admission.reserve("next", RunNeeds({"tokens": 200}), Priority.NORMAL, wait=False).status
        == "refused"
    )
    time.sleep(1.6)  # the lease's TTL, not a guess at speed
    assert (
        admission.reserve("next", RunNeeds({"tokens": 200}), Priority.NORMAL, wait=False).status
        == "admitted"
    )
    assert admission.snapshot()["resources"]["tokens"]["reserved"] == 200


def test_waiting_runs_are_admitted_in_priority_order(redis_client: redis.Redis) -> None:
    admission = Admission(redis_client, pool())
    whole = RunNeeds({"tokens": 500})
    assert admission.reserve("first", whole, Priority.LOW).status == "admitted"
    for run, priority in [
        ("low", Priority.LOW),
        ("normal-1", Priority.NORMAL),
        ("high", Priority.HIGH),
        ("normal-2", Priority.NORMAL),
    ]:
        decision = admission.reserve(run, whole, priority)
        assert decision.status == "waiting" and decision.reasons
    order = []
    holder = "first"
    for _ in range(4):
        admitted = admission.release(holder)
        assert len(admitted) == 1
        holder = admitted[0]
        order.append(holder)
    assert order == ["high", "normal-1", "normal-2", "low"]


def test_a_run_that_can_never_fit_is_refused_with_the_reason(redis_client: redis.Redis) -> None:
    admission = Admission(redis_client, pool())
    decision = admission.reserve("huge", RunNeeds({"tokens": 501}), Priority.HIGH)
    assert decision.status == "refused"
    assert decision.reasons == ["tokens needs 501, more than its daily limit of 500"]
    no_wait = admission.reserve("a", RunNeeds({"tokens": 400}), Priority.NORMAL)
    short = admission.reserve("b", RunNeeds({"tokens": 200}), Priority.NORMAL, wait=False)
    assert no_wait.status == "admitted" and short.status == "refused"
    assert short.retry_after_s and 0 < short.retry_after_s <= 86400
    assert "100 of 500 daily left, 200 needed" in short.reasons[0]


def test_refunds_are_exact_and_settlement_is_idempotent(redis_client: redis.Redis) -> None:
    admission = Admission(redis_client, pool())
    assert admission.reserve("r", RunNeeds({"big": 1000}), Priority.NORMAL).status == "admitted"
    assert admission.settle("r", "s1", "big", 600, 250) == 350
    assert admission.settle("r", "s1", "big", 600, 250) == 0  # redelivered stage
    state = admission.snapshot()["resources"]["big"]
    assert (state["used_today"], state["reserved"]) == (250, 400)
    assert admission.settle("r", "s2", "big", 400, 400) == 0
    admission.release("r")
    state = admission.snapshot()["resources"]["big"]
    assert (state["used_today"], state["reserved"]) == (650, 0)


def test_cooldown_holds_a_resource_for_every_process(
    settings: Settings, redis_client: redis.Redis
) -> None:
    Admission(redis.Redis.from_url(settings.redis_url), pool()).cooldown("tokens", 2.0)
    other = Admission(redis_client, pool())
    assert 0 < other.cooldown_remaining("tokens") <= 2.0
    decision = other.reserve("r", RunNeeds({"tokens": 1}), Priority.HIGH, wait=False)
    assert decision.status == "refused"
    assert "cooling down" in decision.reasons[0] and decision.retry_after_s


def test_capacity_slots_are_leases(redis_client: redis.Redis) -> None:
    admission = Admission(redis_client, pool(), lease_ttl_s=1)
    assert admission.acquire_slot("echo", "a") and admission.acquire_slot("echo", "b")
    assert not admission.acquire_slot("echo", "c")
    admission.release_slot("echo", "a")
    assert admission.acquire_slot("echo", "c")
    assert admission.snapshot()["worker_capacity"]["echo"] == {"max": 2, "active": 2}
    time.sleep(1.1)  # past the slot lease: holders that stopped renewing lose their slots
    assert admission.acquire_slot("echo", "d")
    assert admission.snapshot()["worker_capacity"]["echo"]["active"] == 1


def test_stages_waiting_for_a_slot_go_by_priority(redis_client: redis.Redis) -> None:
    admission = Admission(redis_client, pool(), lease_ttl_s=1)
    high, low = PRIORITY_RANK[Priority.HIGH], PRIORITY_RANK[Priority.LOW]
    assert admission.acquire_slot("echo", "a", rank=low)
    assert admission.acquire_slot("echo", "b", rank=low)
    assert not admission.acquire_slot("echo", "early-low", rank=low)  # full: it waits
    assert not admission.acquire_slot("echo", "late-high", rank=high)
    admission.release_slot("echo", "a")
    # The slot is free, but a high stage waits: the low one asking first does not get it.
    assert not admission.acquire_slot("echo", "early-low", rank=low)
    assert not admission.acquire_slot("echo", "new-low", rank=low)
    assert admission.acquire_slot("echo", "late-high", rank=high)
    admission.release_slot("echo", "b")
    assert not admission.acquire_slot("echo", "new-low", rank=low)  # came after early-low
    assert admission.acquire_slot("echo", "early-low", rank=low)
    # A waiter that stops asking (its worker died) loses its place after a lease period.
    assert not admission.acquire_slot("echo", "stale-high", rank=high)  # asks once, then dies
    admission.release_slot("echo", "late-high")
    assert not admission.acquire_slot("echo", "new-low", rank=low)  # stale-high is ahead
    for _ in range(2):  # early-low keeps its slot meanwhile
        time.sleep(0.6)
        assert admission.renew_slot("echo", "early-low")
    assert admission.acquire_slot("echo", "new-low", rank=low)
    # One that ends without running (its run was cancelled) gives its place back at once.
    assert not admission.acquire_slot("echo", "gone-high", rank=high)
    admission.release_slot("echo", "gone-high")
    admission.release_slot("echo", "new-low")
    assert admission.acquire_slot("echo", "next-low", rank=low)


def test_zero_capacity_worker_type_never_fits(redis_client: redis.Redis) -> None:
    tight = ResourcePool.model_validate({"workers": {"max_concurrent": {"gpu": 0}}})
    decision = Admission(redis_client, tight).reserve("r", RunNeeds({}, {"gpu": 1}), Priority.HIGH)
    assert decision.status == "refused" and "gpu" in decision.reasons[0]

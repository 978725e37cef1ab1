"""Utilization from the capacity slots and the scaling report, on the in-process engine."""

from __future__ import annotations

import pytest
import redis

from orchestrator.constants import REDIS_PREFIX
from orchestrator.engine import scaling
from tests.engine.conftest import Engine, wait_until


def _busy(client: redis.Redis, worker: str) -> int:
    return sum(int(v) for v in client.hvals(f"{REDIS_PREFIX}busy:{worker}"))


def test_a_finished_stage_counts_its_slot_time_as_busy(fresh: Engine) -> None:
    execution = fresh.wait(fresh.submit("slow", {"seconds": 0.3}))
    assert execution.status == "completed"
    rows = fresh.stages(execution.execution_id)
    busy = _busy(fresh.runtime.redis, "sleep")
    # Slot time covers each stage's own time (the slot is taken before the function runs).
    assert busy >= sum(row.time_ms or 0 for row in rows.values()) > 0
    assert not fresh.runtime.redis.hlen(f"{REDIS_PREFIX}slot_start:sleep")
    used = scaling.utilization(fresh.runtime)["sleep"]
    assert used["capacity"] == 4 and used["active"] == 0
    hour = used["utilization"]["1h"]
    assert hour is not None and 0 < hour <= 1
    assert used["utilization"]["1h"] <= used["utilization"]["15m"] <= used["utilization"]["1m"]


def test_a_running_stage_counts_before_it_releases(fresh: Engine) -> None:
    execution_id = fresh.submit("slow", {"seconds": 3})
    fresh.wait_stage(execution_id, "one", "running")
    used = wait_until(
        lambda: (u := scaling.utilization(fresh.runtime)["sleep"])["utilization"]["1m"] and u,
        "busy time of the running stage",
    )
    assert used["active"] == 1
    assert _busy(fresh.runtime.redis, "sleep") == 0  # nothing released yet: all of it is live
    assert fresh.wait(execution_id).status == "completed"


def test_a_lapsed_slot_leaves_no_start_mark(fresh: Engine) -> None:
    admission = fresh.runtime.admission
    client = fresh.runtime.redis
    assert admission.acquire_slot("echo", "ghost")
    assert client.hexists(f"{REDIS_PREFIX}slot_start:echo", "ghost")
    client.zadd(f"{REDIS_PREFIX}slots:echo", {"ghost": 1})  # its lease lapsed long ago
    assert scaling.utilization(fresh.runtime)["echo"]["active"] == 0
    assert not client.hexists(f"{REDIS_PREFIX}slot_start:echo", "ghost")


def test_release_in_a_pipeline_frees_the_slot_when_redis_lost_the_script(fresh: Engine) -> None:
    admission = fresh.runtime.admission
    client = fresh.runtime.redis
    assert admission.acquire_slot("echo", "h")
    client.script_flush()
    pipe = client.pipeline(transaction=False)
    admission.release_slot("echo", "h", client=pipe)
    with pytest.raises(redis.exceptions.NoScriptError):
        pipe.execute()
    assert client.zscore(f"{REDIS_PREFIX}slots:echo", "h") is None
    admission.release_slot("echo", "h")  # loads the script again and counts the busy time
    assert not client.hexists(f"{REDIS_PREFIX}slot_start:echo", "h")


def test_the_report_sizes_every_worker_type_within_its_bounds(fresh: Engine) -> None:
    for _ in range(3):
        assert fresh.wait(fresh.submit("slow", {"seconds": 0.1})).status == "completed"
    report = scaling.report(fresh.runtime, fresh=True)
    sleep = report["worker_types"]["sleep"]
    assert sleep["forecast"]["history_minutes"] >= 1
    assert sleep["forecast"]["arrivals_per_minute"] > 0
    assert sleep["service_s"] > 0
    for worker, figures in report["worker_types"].items():
        assert figures["min_workers"] <= figures["desired_workers"] <= figures["max_workers"]
        assert figures["backlog"] == {"stages": 0, "work_s": 0.0}, worker


def test_a_run_waiting_for_admission_is_backlog(fresh: Engine) -> None:
    client = fresh.runtime.redis
    execution_id = fresh.submit("slow", {"seconds": 3})
    fresh.wait_stage(execution_id, "one", "running")
    # Pretend a second run waits for admission: its three pending stage rows are backlog.
    waiting = fresh.submit("slow", {"seconds": 3})
    fresh.wait_stage(waiting, "one", "running")
    client.zadd(f"{REDIS_PREFIX}admitted", {waiting: 1})
    report = scaling.report(fresh.runtime, fresh=True)["worker_types"]["sleep"]
    assert report["backlog"]["stages"] >= 3 and report["backlog"]["work_s"] > 0
    assert report["desired_workers"] >= 1
    client.zrem(f"{REDIS_PREFIX}admitted", waiting)
    assert fresh.wait(execution_id).status == "completed"
    assert fresh.wait(waiting).status == "completed"

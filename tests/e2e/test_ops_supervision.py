"""Supervision an operator relies on: a crashing worker is backed off, beat says it ticks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from celery import Celery

from orchestrator.ops.beat_health import MAX_AGE_S, HeartbeatScheduler, heartbeat_age
from orchestrator.ops.supervisor import CrashBackoff, Restarter, WorkerFleet, start_worker
from orchestrator.settings import Settings
from tests.conftest import ROOT


def test_crash_backoff_doubles_up_to_its_cap_and_starts_over_after_a_stable_run() -> None:
    backoff = CrashBackoff(base_s=1, cap_s=8, stable_s=60)
    delays = [backoff.delay("feed_fetcher", uptime_s=2) for _ in range(6)]
    assert delays == [1, 2, 4, 8, 8, 8]
    assert backoff.delay("report_builder", uptime_s=0) == 1  # per worker
    assert backoff.delay("feed_fetcher", uptime_s=3600) == 1  # it had stayed up: start over


def test_a_worker_that_keeps_crashing_comes_back_later_each_time(
    settings: Settings, tmp_path: Path
) -> None:
    """Real processes: a worker whose app cannot import exits at once, every time."""
    fleet = WorkerFleet(log_dir=tmp_path)

    def crash(queue: str) -> None:
        start_worker(fleet, settings, queue, app_module="no_such_module_of_orchestrator")

    crash("feed_fetcher")
    restarter = Restarter(fleet, crash, CrashBackoff(base_s=1, cap_s=4), {"feed_fetcher": 0.0})
    now, said, restarts = 0.0, [], 0
    try:
        while restarts < 4:
            fleet.processes["feed_fetcher"].wait(timeout=60)  # exited (bad app module)
            now += 0.1
            lines = restarter.step(now)  # notices the exit, schedules the restart
            said += lines
            wait = restarter.due["feed_fetcher"] - now
            assert restarter.step(now + wait / 2) == []  # not before its time
            now += wait
            assert restarter.step(now) == ["worker feed_fetcher restarted"]
            restarts += 1
    finally:
        fleet.stop()
    assert [line.split("restarting it in ")[1].split(" s")[0] for line in said] == [
        "1", "2", "4", "4"
    ]  # fmt: skip
    assert said[0].startswith("worker feed_fetcher exited with ")
    assert "crash 3 in a row, backing off" in said[2]


def test_beat_heartbeat_is_touched_by_each_tick_and_checked_by_the_cli(
    settings: Settings, tmp_path: Path
) -> None:
    schedule = tmp_path / "celerybeat-schedule"
    app = Celery("beat-health", broker=settings.broker_url, set_as_current=False)
    app.conf.beat_schedule = {}
    scheduler = HeartbeatScheduler(app, schedule_filename=str(schedule), lazy=False)
    try:
        assert heartbeat_age(schedule) is None  # built, not ticked yet
        scheduler.tick()
    finally:
        scheduler.close()
    age = heartbeat_age(schedule)
    assert age is not None and age < MAX_AGE_S

    def check() -> subprocess.CompletedProcess[str]:
        env = {"ORCH_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
        return subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "beat", "--check"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip

    fresh = check()
    assert fresh.returncode == 0, fresh.stderr
    assert "beat ticked" in fresh.stdout
    old = schedule.parent / "celerybeat-schedule.heartbeat"
    stale = old.stat().st_mtime - MAX_AGE_S - 60
    os.utime(old, (stale, stale))  # beat stopped ticking a while ago
    stuck = check()
    assert stuck.returncode == 1
    assert "beat is not ticking" in stuck.stderr
    old.unlink()
    assert "last tick: never" in check().stderr

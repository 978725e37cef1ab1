"""``orchestrator workers``: the whole fleet in one command, bringing back a worker that dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from orchestrator.settings import Settings
from tests.conftest import ROOT

#: A Redis DB of its own: the suite's worker fleet listens on the suite's DB.
FLEET_REDIS = "redis://127.0.0.1:6379/12"


def pids_of(pattern: str) -> set[int]:
    found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()}


def wait_for(predicate, timeout_s: float = 90):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.3)
    raise TimeoutError("condition not met")


def test_workers_brings_back_a_killed_worker_runs_beat_and_stops_cleanly(
    e2e_settings: Settings, tmp_path: Path
) -> None:
    redis.Redis.from_url(FLEET_REDIS).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(e2e_settings.to_env())
    env.update(
        ORCH_S3_ENDPOINT=e2e_settings.s3_endpoint,
        ORCH_DATA_DIR=str(tmp_path),
        ORCH_DATABASE_URL=f"sqlite:///{tmp_path / 'fleet.db'}",
        ORCH_REDIS_URL=FLEET_REDIS,
        ORCH_BROKER_URL=FLEET_REDIS,
        ORCH_WORKER_MODULES="workers,workers.testing",
    )
    log = tmp_path / "workers.log"
    with log.open("wb") as out:
        command = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "workers"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "workers up:" in log.read_text())
        served = log.read_text().split("workers up:")[1].split(" (logs")[0].split(", ")
        assert "sleep" in served and "feed_fetcher" in served  # the test types asked for too
        node = f"feed_fetcher@fleet-{command.pid} "
        first = wait_for(lambda: pids_of(node))
        group = os.getpgid(min(first))  # the worker leads its own process group
        os.killpg(group, signal.SIGKILL)  # the worker and its pool children, at once
        wait_for(lambda: "worker feed_fetcher exited" in log.read_text())
        again = wait_for(lambda: pids_of(node) - first)
        assert {os.getpgid(pid) for pid in again} != {group}
        assert command.poll() is None  # the fleet goes on

        def beat_ticks() -> bool:  # the embedded beat answers compose's healthcheck too
            check = [sys.executable, "-m", "orchestrator.cli", "beat", "--check"]
            return subprocess.run(check, cwd=ROOT, env=env, capture_output=True).returncode == 0

        assert wait_for(beat_ticks)
    finally:
        command.send_signal(signal.SIGTERM)
        command.wait(timeout=60)
    assert pids_of(f"@fleet-{command.pid} ") == set()  # stopped whole, nothing left behind
    assert "Traceback" not in log.read_text()

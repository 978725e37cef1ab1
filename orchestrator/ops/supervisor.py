"""Start and stop a fleet of real Celery worker processes: one per worker type + coordinator.

``orchestrator workers``, ``make demo`` and the end-to-end tests all start workers here, the
same way an operator would with ``orchestrator worker --type T``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery

from orchestrator.constants import COORDINATOR_QUEUE
from orchestrator.errors import DependencyUnavailable
from orchestrator.sdk import Registry
from orchestrator.settings import Settings


@dataclass
class WorkerFleet:
    """Worker processes we started, by queue; ``stop()`` ends them all."""

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    log_dir: Path | None = None

    def node_names(self) -> list[str]:
        return [f"{queue}@fleet-{os.getpid()}" for queue in self.processes]

    def kill(self, queue: str, sig: int = signal.SIGKILL) -> None:
        """Kill one worker's whole process group (fault injection)."""
        process = self.processes[queue]
        os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def stop(self, timeout_s: float = 20.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def start_worker(
    fleet: WorkerFleet,
    settings: Settings,
    queue: str,
    *,
    concurrency: int = 1,
    pool: str = "prefork",
    extra_env: dict[str, str] | None = None,
    app_module: str = "orchestrator.celery_app",
    beat: bool = False,
) -> None:
    """Start (or restart) the worker process serving ``queue``; with ``beat``, it also runs
    the beat schedule (reconciler, worker health) embedded, as ``celery worker -B`` does."""
    log_dir = fleet.log_dir or settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(settings.to_env())
    env.update(extra_env or {})
    log = (log_dir / f"worker-{queue}.log").open("ab")
    fleet.processes[queue] = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app_module,
            "worker",
            "-Q",
            queue,
            "-n",
            f"{queue}@fleet-{os.getpid()}",
            "-c",
            str(concurrency),
            "-P",
            pool,
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
            *(_embedded_beat(settings) if beat else []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def unserved_queues(app: Celery, queues: set[str], *, timeout_s: float = 0.5) -> list[str]:
    """Which of ``queues`` no running worker consumes (a run sent there would just wait)."""
    replies = app.control.inspect(timeout=timeout_s).active_queues() or {}
    served = {queue["name"] for consumed in replies.values() for queue in consumed}
    return sorted(queues - served)


def deployed_queues(registry: Registry, *, internal: bool = False) -> list[str]:
    """The coordinator and every worker type that is deployed (with ``internal``, also the
    test and benchmark types the registry holds: only an explicit ``workers.testing`` in
    ``ORCH_WORKER_MODULES`` loads them)."""
    return [COORDINATOR_QUEUE] + [w.name for w in registry if internal or not w.internal]


def _embedded_beat(settings: Settings) -> list[str]:
    """``celery worker`` options that run beat inside it, ticking the heartbeat that
    ``orchestrator beat --check`` reads, as a standalone ``orchestrator beat`` does."""
    from orchestrator.ops.beat_health import SCHEDULE_FILE, SCHEDULER

    return ["-B", "-s", str(settings.data_dir / SCHEDULE_FILE), "--scheduler", SCHEDULER]


def start_fleet(
    settings: Settings,
    app: Celery,
    *,
    queues: list[str] | None = None,
    concurrency: int = 1,
    timeout_s: float = 60.0,
    app_module: str = "orchestrator.celery_app",
    beat: bool = False,
) -> WorkerFleet:
    """One process per queue (all of the app's by default), returned once all answer a ping;
    with ``beat``, the coordinator's process also runs the beat schedule."""
    names = queues or [q.name for q in app.conf.task_queues]
    fleet = WorkerFleet(log_dir=settings.data_dir / "logs")
    for queue in names:
        start_worker(
            fleet,
            settings,
            queue,
            concurrency=2 if queue == COORDINATOR_QUEUE else concurrency,
            app_module=app_module,
            beat=beat and queue == COORDINATOR_QUEUE,
        )
    try:
        wait_ready(app, fleet, timeout_s=timeout_s)
    except DependencyUnavailable:
        fleet.stop()
        raise
    return fleet


def wait_ready(app: Celery, fleet: WorkerFleet, *, timeout_s: float = 60.0) -> None:
    """Block until every worker of the fleet answers a broadcast ping."""
    expected = set(fleet.node_names())
    deadline = time.monotonic() + timeout_s
    answered: set[str] = set()
    while time.monotonic() < deadline:
        for queue, process in fleet.processes.items():
            if process.poll() is not None:
                raise DependencyUnavailable(
                    f"worker {queue!r} exited with {process.returncode}; see {fleet.log_dir}"
                )
        replies = app.control.ping(destination=sorted(expected - answered), timeout=0.5) or []
        for reply in replies:
            answered.update(reply)
        if answered >= expected:
            return
    missing = ", ".join(sorted(expected - answered))
    raise DependencyUnavailable(f"workers did not start in {timeout_s:.0f} s: {missing}")


def start_api(settings: Settings, port: int, *, timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
    """Start ``orchestrator api`` on 127.0.0.1:``port``; return once ``/health`` answers."""
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(settings.to_env())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "api.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "api", "--port", str(port)],
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DependencyUnavailable(f"the API exited with {process.returncode}; see {log_path}")
        try:
            # /health answers within its probes' deadline (a few seconds), even when one hangs.
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code in {200, 503}:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise DependencyUnavailable(f"the API did not start in {timeout_s:.0f} s; see {log_path}")


@dataclass
class CrashBackoff:
    """How long to wait before bringing back a worker that exited: exponential in the crashes
    in a row (``base_s``, doubled each time, capped at ``cap_s``), as Docker's restart policy;
    a worker that had stayed up ``stable_s`` starts over at ``base_s``."""

    base_s: float = 1.0
    cap_s: float = 60.0
    stable_s: float = 60.0
    crashes: dict[str, int] = field(default_factory=dict)

    def delay(self, queue: str, uptime_s: float) -> float:
        """Record an exit of ``queue`` after ``uptime_s``; return the wait before its restart."""
        if uptime_s >= self.stable_s:
            self.crashes[queue] = 0
        self.crashes[queue] = self.crashes.get(queue, 0) + 1
        return min(self.cap_s, self.base_s * 2 ** (self.crashes[queue] - 1))


@dataclass
class Restarter:
    """Brings back the fleet's workers that exit, after a ``CrashBackoff`` delay, and says so.

    ``step(now)`` is called from the supervising loop (``orchestrator workers``) with the
    monotonic time; it returns one line per exit noticed and per restart done."""

    fleet: WorkerFleet
    restart: Callable[[str], None]
    backoff: CrashBackoff = field(default_factory=CrashBackoff)
    started_at: dict[str, float] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)

    def step(self, now: float) -> list[str]:
        lines: list[str] = []
        for queue, process in list(self.fleet.processes.items()):
            if queue in self.due or process.poll() is None:
                continue
            uptime = now - self.started_at.setdefault(queue, now)
            wait = self.backoff.delay(queue, uptime)
            self.due[queue] = now + wait
            crashes = self.backoff.crashes[queue]
            lines.append(
                f"worker {queue} exited with {process.returncode} after {uptime:.0f} s; "
                f"restarting it in {wait:.0f} s"
                + (f" (crash {crashes} in a row, backing off)" if crashes > 1 else "")
            )
        for queue, at in sorted(self.due.items()):
            if now >= at:
                del self.due[queue]
                self.restart(queue)
                self.started_at[queue] = now
                lines.append(f"worker {queue} restarted")
        return lines

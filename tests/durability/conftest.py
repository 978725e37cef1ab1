"""Fault-injection fixtures: a private Redis and SeaweedFS we may kill, and our own workers.

The machine's Redis (6379) and SeaweedFS (8333) are shared, so this package starts its own
``redis-server`` and ``weed mini`` on free loopback ports and points a worker fleet of its own
at them. The reconciler is not the beat process: ``Stack.wait`` calls
``recovery.reconcile(runtime)`` itself about once a second while it waits, so a test decides
exactly when recovery may happen.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import func, select

from orchestrator import template_registry
from orchestrator.celery_app import create_celery_app
from orchestrator.constants import COORDINATOR_QUEUE, REDIS_PREFIX, ExecutionStatus
from orchestrator.db import Database, PipelineExecution, ResourceUsage, StageExecution
from orchestrator.engine import coordinator, events, recovery
from orchestrator.engine.run_state import RunState
from orchestrator.ops.supervisor import WorkerFleet, start_api, start_worker, wait_ready
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from orchestrator.storage.objects import ObjectStore
from tests.conftest import ROOT
from tests.services import OUTAGE_ERRORS, RedisServer, WeedServer, end, free_ports

HERE = Path(__file__).resolve().parent
#: Worker processes of the suite and their concurrency (two sleeps run side by side).
QUEUES = {COORDINATOR_QUEUE: 2, "sleep": 2, "sum": 1, "echo": 1, "fail": 1, "big": 1}


def redeliver(stack: Stack, tags: list[str]) -> None:
    """What the broker does after the visibility timeout: put the messages back."""
    with stack.app.connection_for_write() as connection:
        channel = connection.default_channel
        for tag in tags:
            channel.qos.restore_by_tag(tag, leftmost=True)


def wait_broker_idle(stack: Stack, timeout_s: float = 60) -> None:
    """Until no message is queued or unacknowledged for a while: redeliveries are done."""
    client = stack.runtime.redis
    deadline, quiet_since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        queued = sum(client.llen(k) for k in client.scan_iter() if client.type(k) == b"list")
        if queued == 0 and client.hlen("unacked") == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 2:
                return
        else:
            quiet_since = None
        time.sleep(0.2)
    raise TimeoutError("the broker never went idle")


@dataclass
class Stack:
    """Settings, app, runtime and workers of the suite, and the waits every test needs."""

    settings: Settings
    app: Celery
    runtime: Runtime
    fleet: WorkerFleet
    redis_server: RedisServer
    s3: WeedServer
    #: Queues whose worker exited on its own and was restarted by ``revive``.
    revived: list[str] = field(default_factory=list)

    # -- processes -------------------------------------------------------------------------

    def start_worker(self, queue: str) -> None:
        start_worker(self.fleet, self.settings, queue, concurrency=QUEUES[queue])

    def kill_worker(self, queue: str) -> None:
        """SIGKILL the worker's whole process group (main process and pool children)."""
        self.fleet.kill(queue)

    def reconnect(self) -> None:
        """A fresh app and runtime: Celery's pooled broker connections do not all survive a
        Redis restart in the test process (the workers reconnect on their own)."""
        self.runtime.close()
        self.app = create_celery_app(self.settings)
        self.runtime = Runtime(self.settings, self.app)

    def revive(self) -> list[str]:
        """Restart workers that exited, as a process manager (compose's restart policy) does."""
        dead = [q for q, p in self.fleet.processes.items() if p.poll() is not None]
        for queue in dead:
            self.start_worker(queue)
        self.revived += dead
        return dead

    def ensure_workers(self) -> None:
        """Restart any worker a test left dead and wait until all answer."""
        self.revive()
        for attempt in range(3):
            try:
                wait_ready(self.app, self.fleet, timeout_s=120)
                return
            except OUTAGE_ERRORS:  # pooled broker connections from before a Redis restart
                self.reconnect()
                if attempt == 2:
                    raise

    def s3_ready(self) -> None:
        ObjectStore(self.settings).ping()

    # -- runs --------------------------------------------------------------------------------

    def submit(self, template: str, parameters: dict[str, Any] | None = None) -> str:
        execution, _ = coordinator.submit(self.runtime, template, parameters or {})
        return execution.execution_id

    def wait(
        self, execution_id: str, *, timeout_s: float = 180, reconcile: bool = True
    ) -> PipelineExecution:
        """Block until the run is terminal and its final event is out, reconciling meanwhile.

        The final event is published after everything was released, so what a test checks
        after this returns is the settled state, not a moment in the middle of ``finish``.
        """
        deadline = time.monotonic() + timeout_s
        next_pass = 0.0
        while time.monotonic() < deadline:
            try:
                execution = coordinator.load(self.runtime, execution_id)
                if ExecutionStatus(execution.status).terminal and self.final_event(execution_id):
                    return execution
                if reconcile and time.monotonic() >= next_pass:
                    self.revive()
                    recovery.reconcile(self.runtime)
                    next_pass = time.monotonic() + 1.0
            except OUTAGE_ERRORS:
                pass  # a service this test stopped is coming back
            time.sleep(0.2)
        raise TimeoutError(
            f"{execution_id} not finished in {timeout_s} s: {self.live(execution_id)}"
        )

    def wait_running(
        self, execution_id: str, stage: str, *, after_s: float = 0.5, timeout_s: float = 120
    ) -> None:
        """Block until ``stage`` has been running for ``after_s`` (reconciling meanwhile)."""
        deadline = time.monotonic() + timeout_s
        next_pass = 0.0
        while time.monotonic() < deadline:
            try:
                record = self.live(execution_id).get(stage, {})
                started = record.get("started_at") if record.get("status") == "running" else None
                if started and time.time() * 1000 - started >= after_s * 1000:
                    return
                if time.monotonic() >= next_pass:
                    self.revive()
                    recovery.reconcile(self.runtime)
                    next_pass = time.monotonic() + 1.0
            except OUTAGE_ERRORS:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"stage {stage} of {execution_id} never ran: {self.live(execution_id)}")

    def wait_resumed(self, execution_id: str, times: int, *, timeout_s: float = 120) -> None:
        """Block until the reconciler has resumed the run ``times`` times and relaunched it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                execution = coordinator.load(self.runtime, execution_id)
                if execution.resume_count >= times and execution.status == "running":
                    return
                self.revive()
                recovery.reconcile(self.runtime)
            except OUTAGE_ERRORS:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{execution_id} was not resumed {times} times in {timeout_s} s")

    def live(self, execution_id: str) -> dict[str, dict[str, Any]]:
        return RunState(self.runtime.redis).stages(execution_id)

    def final_event(self, execution_id: str) -> dict[str, Any] | None:
        finals = [e for _, e in self.events(execution_id) if e.get("type") == events.FINAL]
        return finals[-1] if finals else None

    def events(self, execution_id: str) -> list[tuple[str, dict[str, Any]]]:
        return events.read(self.runtime.redis, execution_id, count=100_000)

    # -- the durable record ------------------------------------------------------------------

    def stages(self, execution_id: str) -> dict[str, StageExecution]:
        with self.runtime.db.session() as session:
            rows = session.scalars(
                select(StageExecution).where(StageExecution.execution_id == execution_id)
            ).all()
        return {row.stage_name: row for row in rows}

    def usage_rows_per_stage(self, execution_id: str | None = None) -> dict[str, int]:
        query = select(ResourceUsage.stage_id, func.count()).group_by(ResourceUsage.stage_id)
        if execution_id is not None:
            query = query.where(ResourceUsage.execution_id == execution_id)
        with self.runtime.db.session() as session:
            return {stage: count for stage, count in session.execute(query).all()}

    def usage_totals(self) -> dict[str, float]:
        query = select(ResourceUsage.resource_name, func.sum(ResourceUsage.quantity_used))
        with self.runtime.db.session() as session:
            rows = session.execute(query.group_by(ResourceUsage.resource_name)).all()
        return {name: float(total) for name, total in rows}

    def assert_nothing_held(self, *, counters_match_ledger: bool = True) -> None:
        """No lease, no queued run, no capacity slot (live or lapsed), nothing reserved; the
        quota counters hold exactly the settled usage the ledger recorded."""
        snapshot = self.runtime.admission.snapshot()
        assert snapshot["leases"] == 0, snapshot
        assert snapshot["pending_runs"] == 0, snapshot
        assert all(w["active"] == 0 for w in snapshot["worker_capacity"].values()), snapshot
        slots = list(self.runtime.redis.scan_iter(match=f"{REDIS_PREFIX}slots:*"))
        assert all(self.runtime.redis.zcard(key) == 0 for key in slots), [
            (key, self.runtime.redis.zrange(key, 0, -1)) for key in slots
        ]
        ledger = self.usage_totals()
        for name, resource in snapshot["resources"].items():
            assert resource["reserved"] == pytest.approx(0, abs=1e-6), (name, resource)
            if counters_match_ledger:
                used = ledger.get(name, 0.0)
                assert resource["used_today"] == pytest.approx(used, abs=1e-6), (name, resource)

    def reset(self) -> None:
        """Forget what earlier tests left in Redis (ours only: Celery's bindings stay)."""
        client = self.runtime.redis
        keys = list(client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])


@pytest.fixture(scope="package")
def stack(
    settings: Settings, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("durability")
    redis_server = RedisServer(base / "redis")
    redis_server.start()
    s3 = WeedServer(base / "s3", settings.s3_access_key, settings.s3_secret_key.get_secret_value())
    ours = settings.with_overrides(
        data_dir=base,
        redis_url=redis_server.url,
        broker_url=redis_server.url,
        s3_endpoint=s3.endpoint,
        s3_embedded=False,
        templates_dir=ROOT / "tests" / "templates",
        resources_file=HERE / "resources.yaml",
        worker_modules=("workers.testing",),  # the test types only: nothing else to load
    )
    fleet = WorkerFleet(log_dir=base / "logs")
    built: Stack | None = None
    try:
        s3.start(lambda: ObjectStore(ours).ping())
        app = create_celery_app(ours)
        runtime = Runtime(ours, app)
        template_registry.sync_directory(
            runtime.db, ours.templates_dir, template_registry.known_workers(runtime)
        )
        built = Stack(ours, app, runtime, fleet, redis_server, s3)
        for queue in QUEUES:
            built.start_worker(queue)
        wait_ready(app, fleet, timeout_s=120)
        yield built
    finally:
        fleet.stop()
        if built is not None:
            built.runtime.close()
        s3.stop()
        redis_server.stop()


@pytest.fixture(scope="package")
def stack_api(stack: Stack) -> Iterator[str]:
    """A real ``orchestrator api`` process on the suite's private services; its URL."""
    port = free_ports(1)[0]
    process = start_api(stack.settings, port)
    yield f"http://127.0.0.1:{port}"
    end(process, signal.SIGTERM)


@pytest.fixture
def fresh(stack: Stack, db: Database) -> Stack:
    """The stack with empty tables (templates registered again), no orchestrator keys in
    Redis, and every worker answering."""
    template_registry.sync_directory(
        stack.runtime.db,
        stack.settings.templates_dir,
        template_registry.known_workers(stack.runtime),
    )
    stack.reset()
    stack.ensure_workers()
    return stack

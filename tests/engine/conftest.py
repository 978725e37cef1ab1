"""The in-process engine tier: the stage runner, ``finish`` and recovery run in this process.

One embedded Celery worker (``celery.contrib.testing``, a thread pool inside the test
process) consumes the coordinator's queue and every test worker type's, on the real Redis,
PostgreSQL and S3 of the suite. A breakpoint in ``orchestrator/engine`` stops the test that
reaches it (run with ``-s``; stages run in worker threads, so set ``ORCH_ENGINE_WAIT_S``
high enough that the test's own wait does not time out while you step). The reconciler is no
beat process here: a test calls ``recovery.reconcile`` itself, so it decides exactly when
recovery happens.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.worker import state as worker_state
from sqlalchemy import func, select

from orchestrator import template_registry
from orchestrator.celery_app import create_celery_app
from orchestrator.constants import COORDINATOR_QUEUE, REDIS_PREFIX, ExecutionStatus, redis_key
from orchestrator.core.handshake import DataRef
from orchestrator.db import Database, PipelineExecution, ResourceUsage, StageExecution
from orchestrator.engine import coordinator, events
from orchestrator.engine.run_state import RunState
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from tests.conftest import ROOT
from tests.services import WeedServer

HERE = Path(__file__).resolve().parent
#: Threads of the embedded worker: enough for a fan-out and a coordinator task side by side.
CONCURRENCY = 8
#: Generous bounds for waits that normally end in well under a second (longer when debugging).
WAIT_S = float(os.environ.get("ORCH_ENGINE_WAIT_S", "20"))
#: Redis keys ``reset`` keeps (see there).
KEPT_KEYS = (redis_key("estimator").encode(),)


def wait_until(condition: Callable[[], Any], what: str, *, timeout_s: float = WAIT_S) -> Any:
    """Poll ``condition`` until it returns something truthy and return that; a clear error
    (not a hang) when the engine never gets there."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s} s: {what}")
        time.sleep(0.01)


@dataclass
class Engine:
    """The app, its runtime (the same one its tasks use) and the embedded worker."""

    settings: Settings
    app: Celery
    runtime: Runtime

    # -- runs ----------------------------------------------------------------------------

    def submit(self, template: str, parameters: dict[str, Any] | None = None) -> str:
        execution, created = coordinator.submit(self.runtime, template, parameters or {})
        assert created
        return execution.execution_id

    def wait(self, execution_id: str, *, timeout_s: float = WAIT_S) -> PipelineExecution:
        """Follow the run's events to its final one: by then ``finish`` has persisted the
        stages and released everything, so what a test reads is the settled state."""
        for _ in events.follow(self.runtime.redis, execution_id, timeout_s=timeout_s):
            pass
        execution = coordinator.load(self.runtime, execution_id)
        assert ExecutionStatus(execution.status).terminal, execution.status
        return execution

    def wait_stage(self, execution_id: str, stage: str, status: str) -> dict[str, Any]:
        """The live record of ``stage`` once it reached ``status``."""

        def reached() -> dict[str, Any] | None:
            record = self.live(execution_id).get(stage)
            return record if record and record.get("status") == status else None

        return wait_until(reached, f"stage {stage} of {execution_id} {status}")

    def live(self, execution_id: str) -> dict[str, dict[str, Any]]:
        return RunState(self.runtime.redis).stages(execution_id)

    def events(self, execution_id: str) -> list[dict[str, Any]]:
        return [e for _, e in events.read(self.runtime.redis, execution_id, count=100_000)]

    def output(self, row: StageExecution) -> Any:
        """What a stage wrote, read back by reference (checksum verified)."""
        return self.runtime.outputs.read(DataRef.model_validate(row.data_reference))

    # -- the durable record ----------------------------------------------------------------

    def stages(self, execution_id: str) -> dict[str, StageExecution]:
        with self.runtime.db.session() as session:
            rows = session.scalars(
                select(StageExecution).where(StageExecution.execution_id == execution_id)
            ).all()
        return {row.stage_name: row for row in rows}

    def usage_rows(self, execution_id: str) -> dict[str, int]:
        """Ledger rows per stage: a stage charged twice would show 2."""
        query = (
            select(ResourceUsage.stage_id, func.count())
            .where(ResourceUsage.execution_id == execution_id)
            .group_by(ResourceUsage.stage_id)
        )
        with self.runtime.db.session() as session:
            return {stage: count for stage, count in session.execute(query).all()}

    def assert_nothing_held(self) -> None:
        """No lease, no queued or admitted run, no capacity slot, nothing reserved."""
        snapshot = self.runtime.admission.snapshot()
        assert snapshot["leases"] == 0, snapshot
        assert snapshot["pending_runs"] == 0, snapshot
        assert snapshot["admitted_runs"] == 0, snapshot
        assert all(w["active"] == 0 for w in snapshot["worker_capacity"].values()), snapshot
        for name, resource in snapshot["resources"].items():
            assert resource["reserved"] == pytest.approx(0, abs=1e-6), (name, resource)

    # -- between tests ---------------------------------------------------------------------

    def idle(self) -> bool:
        """No task running or prefetched in the worker and no message left in its queues."""
        if worker_state.active_requests or worker_state.reserved_requests:
            return False
        client = self.runtime.redis
        # Each queue is a few lists on Redis (one per priority step): any list at all counts.
        lists = [key for key in client.scan_iter(_type="list")]
        return not any(client.llen(key) for key in lists) and not client.hlen("unacked")

    def reset(self) -> None:
        """Forget what earlier tests left in Redis (ours only: Celery's bindings stay). The
        estimator's fit stays too: without it every submission asks for a refit, a second
        of work in a worker thread beside each test."""
        client = self.runtime.redis
        keys = [
            key
            for key in client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000)
            if not key.startswith(KEPT_KEYS)
        ]
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])


#: The tier's own Redis DB (the suite's is ORCH_TEST_REDIS_DB, the demo test's 14).
ENGINE_REDIS_DB = int(os.environ.get("ORCH_TEST_ENGINE_REDIS_DB", "13"))


@pytest.fixture(scope="package")
def engine(settings: Settings, database: Database, s3_server: WeedServer) -> Iterator[Engine]:
    """The embedded worker, started once for the tier, on the suite's private services."""
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{ENGINE_REDIS_DB}"
    ours = settings.with_overrides(
        # A Redis DB (so a broker) of its own: the live tier's workers, still up in the same
        # session, must not take this tier's tasks, nor this tier flush their state.
        redis_url=redis_url,
        broker_url=redis_url,
        s3_embedded=False,  # the session's SeaweedFS (s3_server) is already up
        templates_dir=ROOT / "tests" / "templates",
        resources_file=HERE / "resources.yaml",
        worker_modules=("workers.testing",),  # the test types only: nothing else to load
    )
    client = redis.Redis.from_url(ours.redis_url)
    client.flushdb()  # once, before the worker declares its queues
    client.close()
    app = create_celery_app(ours)
    runtime: Runtime = app.conf.orchestrator_runtime  # the runtime the tasks run with
    queues = [COORDINATOR_QUEUE, *runtime.registry.names()]
    with start_worker(
        app,
        pool="threads",
        concurrency=CONCURRENCY,
        perform_ping_check=False,  # the app has no celery.ping task
        queues=queues,
        shutdown_timeout=30,
    ):
        yield Engine(ours, app, runtime)
    runtime.close()


@pytest.fixture
def fresh(engine: Engine, db: Database) -> Iterator[Engine]:
    """The engine with empty tables (test templates registered again) and no orchestrator
    keys in Redis; afterwards, the worker idle, so nothing of this test runs into the next."""
    template_registry.sync_directory(
        engine.runtime.db,
        engine.settings.templates_dir,
        template_registry.known_workers(engine.runtime),
    )
    engine.reset()
    yield engine
    wait_until(engine.idle, "the embedded worker idle after the test")

"""The door: what admission would refuse later is refused at submission, with the reason.

422 for a run that can never fit the pool, 429 with when to retry for one that cannot fit
what is left of today's quota whatever is released, and for a client with too many runs
waiting already. Real Redis and PostgreSQL; no worker is needed (nothing is launched).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from orchestrator import template_registry
from orchestrator.db import Database
from orchestrator.engine import coordinator
from orchestrator.engine.ledger import Usage, record_usages
from orchestrator.errors import ResourceExhausted, ValidationFailed
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from tests.conftest import ROOT

POOL = """
resources:
  openai_api: {daily_limit: 20000, monthly_limit: 100000}
admission:
  max_waiting_runs_per_client: 3
workers:
  max_concurrent: {big: 0}
"""


@pytest.fixture
def runtime(settings: Settings, db: Database, redis_client: redis.Redis, tmp_path: Path) -> Runtime:
    pool = tmp_path / "resources.yaml"
    pool.write_text(POOL)
    # A broker no worker reads: every run submitted here stays pending, whatever else runs.
    runtime = Runtime(
        settings.with_overrides(
            resources_file=pool,
            templates_dir=ROOT / "tests" / "templates",
            broker_url="memory://",
        )
    )
    template_registry.sync_directory(
        runtime.db, runtime.settings.templates_dir, template_registry.known_workers(runtime)
    )
    return runtime


def test_a_run_that_can_never_fit_is_422(runtime: Runtime) -> None:
    with pytest.raises(ValidationFailed) as refused:
        coordinator.submit(runtime, "hog", {}, client_id="acme")  # 190,000 > 20,000 a day
    assert "openai_api needs 190000, more than its daily limit of 20000" in refused.value.message
    with pytest.raises(ValidationFailed, match="worker type big has no capacity"):
        coordinator.submit(runtime, "bigdata", {}, client_id="acme")


def test_a_run_over_what_is_left_today_is_429_until_tomorrow(runtime: Runtime) -> None:
    """Spent today (the ledger, as rebuilt into the counters) leaves 9,000: a burst run
    reserving 12,000 cannot fit today, whatever finishes."""
    earlier = Usage(
        execution_id="earlier",
        stage_id="earlier.a",
        resource="openai_api",
        quantity=11_000,
        cost_usd=0.0,
        idempotency_key="earlier:a:openai_api",
    )
    record_usages(runtime.db, [earlier])
    runtime.admission.seed()
    with pytest.raises(ResourceExhausted) as refused:
        coordinator.submit(runtime, "burst", {}, client_id="acme")
    assert "openai_api: 9000 of 20000 left this day, 12000 needed" in refused.value.message
    assert refused.value.retry_after_s == pytest.approx(86_400 - time.time() % 86_400, abs=5)


def test_a_client_with_too_many_runs_waiting_is_429(runtime: Runtime) -> None:
    for n in range(3):
        coordinator.submit(runtime, "linear5", {"start": n}, client_id="acme")
    with pytest.raises(ResourceExhausted, match="'acme' already has 3 runs waiting") as refused:
        coordinator.submit(runtime, "linear5", {}, client_id="acme")
    assert refused.value.retry_after_s
    # Another client is not held back by acme's queue.
    execution, created = coordinator.submit(runtime, "linear5", {}, client_id="globex")
    assert created and execution.status == "pending"

"""Storage housekeeping on real S3, Redis and PostgreSQL: what has expired goes unless its run
is live; what is left is measured against resources.yaml and served as gauges."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from orchestrator.db import Deliverable, PipelineExecution, StageExecution
from orchestrator.engine.housekeeping import sweep
from orchestrator.runtime import Runtime
from tests.e2e.test_observability import promtool_check, samples, scrape
from tests.live import Api

EXPIRED = timedelta(seconds=-60)
KEPT = timedelta(days=1)


def _run(runtime: Runtime, status: str) -> str:
    execution_id = f"hk-{status}-{uuid.uuid4().hex[:10]}"
    with runtime.db.session() as session:
        session.add(
            PipelineExecution(
                execution_id=execution_id, template_name="linear5", status=status, parameters={}
            )
        )
    return execution_id


def _output(runtime: Runtime, execution_id: str, stage: str, ttl: timedelta) -> str:
    """A stage row whose ``data_reference`` points at an S3 object written with ``ttl``."""
    key = f"outputs/{execution_id}/{stage}/0123456789abcdef.json"
    stored = runtime.store.put_bytes(key, b'{"rows": [1, 2, 3]}' * 10, ttl=ttl)
    with runtime.db.session() as session:
        session.add(
            StageExecution(
                stage_id=f"{execution_id}.{stage}",
                execution_id=execution_id,
                stage_name=stage,
                worker_name="sum",
                action="add",
                stage_order=0,
                status="completed",
                data_reference={
                    "storage_type": "s3",
                    "storage_key": stored.key,
                    "size_bytes": stored.size_bytes,
                    "checksum": stored.checksum,
                    "expires_at": stored.expires_at.isoformat(),
                },
            )
        )
    return key


def _deliverable(runtime: Runtime, execution_id: str, ttl: timedelta) -> str:
    key = f"deliverables/{execution_id}/report.html"
    stored = runtime.store.put_bytes(key, b"<html>report</html>", ttl=ttl)
    with runtime.db.session() as session:
        session.add(
            Deliverable(
                deliverable_id=uuid.uuid4().hex,
                execution_id=execution_id,
                name="report.html",
                storage_key=key,
                content_type="text/html",
                size_bytes=stored.size_bytes,
                checksum=stored.checksum,
                expires_at=stored.expires_at,
            )
        )
    return key


def _there(runtime: Runtime, key: str) -> bool:
    return any(listed == key for listed, _ in runtime.store.listing(key))


def test_expired_objects_of_ended_runs_go_and_the_rest_stay(runtime: Runtime) -> None:
    finished = _run(runtime, "completed")
    failed = _run(runtime, "failed")  # resumable: its unexpired checkpoints must stay
    running = _run(runtime, "running")
    gone = [
        _output(runtime, finished, "fetch", EXPIRED),
        _deliverable(runtime, finished, EXPIRED),
        _output(runtime, failed, "fetch", EXPIRED),
    ]
    kept = [
        _output(runtime, finished, "report", KEPT),
        _output(runtime, failed, "report", KEPT),
        _output(runtime, running, "fetch", EXPIRED),  # live: a stage may be reading it
        _output(runtime, running, "report", KEPT),
    ]
    # An earlier attempt's output that no row points at: its own stamped expiry decides.
    orphan = f"outputs/{finished}/fetch/fedcba9876543210.json"
    runtime.store.put_bytes(orphan, b"{}", ttl=EXPIRED)
    gone.append(orphan)

    report = sweep(runtime)

    assert [key for key in gone if _there(runtime, key)] == []
    assert [key for key in kept if not _there(runtime, key)] == []
    assert report.deleted_objects >= len(gone)
    assert report.kept_live >= 1
    with runtime.db.session() as session:
        names = session.scalars(
            select(Deliverable.name).where(Deliverable.execution_id == finished)
        ).all()
    assert names == []  # the expired deliverable no longer lists a dead link
    remaining = sum(size for _, size in runtime.store.listing())
    assert report.object_bytes == remaining

    # Once the running run has ended, its expired output goes at the next sweep.
    with runtime.db.session() as session:
        row = session.get(PipelineExecution, running)
        assert row is not None
        row.status = "completed"
        row.completed_at = datetime.now(UTC)
    sweep(runtime)
    assert not _there(runtime, kept[2])
    assert _there(runtime, kept[3])


def test_storage_gauges_and_resources_show_usage_against_the_limits(
    api_server: Api, runtime: Runtime
) -> None:
    key = _output(runtime, _run(runtime, "completed"), "fetch", KEPT)
    report = sweep(runtime)
    assert report.object_bytes >= len(b'{"rows": [1, 2, 3]}' * 10)
    assert _there(runtime, key)

    page = scrape(api_server)
    assert samples(page, "orchestrator_storage_bytes", tier="object_storage") == (
        report.object_bytes
    )
    assert samples(page, "orchestrator_storage_bytes", tier="redis") > 0
    limits = runtime.pool.storage
    assert samples(page, "orchestrator_storage_limit_bytes", tier="object_storage") == (
        limits.object_storage_bytes
    )
    assert samples(page, "orchestrator_storage_limit_bytes", tier="redis") == limits.redis_bytes
    promtool_check(page)

    pool = api_server.call("GET", "/resources", key="monitor").json()
    assert pool["storage"]["object_storage"]["bytes"] == report.object_bytes
    assert pool["storage"]["object_storage"]["limit_bytes"] == limits.object_storage_bytes
    assert pool["storage"]["redis"]["used_bytes"] > 0


def test_housekeeping_is_on_the_beat_schedule_and_registered(runtime: Runtime) -> None:
    from beat_schedule import BEAT_SCHEDULE

    entry = BEAT_SCHEDULE["storage-housekeeping"]
    assert entry["task"] in runtime.celery.tasks
    assert entry["options"]["queue"] == "coordinator"

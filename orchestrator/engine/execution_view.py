"""An execution as JSON: the one shape the API returns and the CLI prints.

``GET /executions/{id}`` and ``orchestrator status`` (local or through the API) render the
same dictionaries, so the two can never disagree about what a run looks like.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from orchestrator.constants import ExecutionStatus
from orchestrator.db import Deliverable, PipelineExecution, StageExecution
from orchestrator.engine import coordinator
from orchestrator.engine.run_state import RunState
from orchestrator.errors import NotFound
from orchestrator.runtime import Runtime

#: How long a deliverable's download URL works.
DOWNLOAD_URL_TTL = timedelta(hours=1)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def serialize(
    execution: PipelineExecution, stages: list[StageExecution] | None = None
) -> dict[str, Any]:
    """The execution (and its stages, when given) as the API's ``ExecutionOut``."""
    body: dict[str, Any] = {
        "execution_id": execution.execution_id,
        "request_id": execution.request_id,
        "client_id": execution.client_id,
        "template_name": execution.template_name,
        "template_version": execution.template_version,
        "parameters": execution.parameters,
        "priority": execution.priority,
        "status": execution.status,
        "error": execution.error,
        "estimated_cost_usd": execution.estimated_cost_usd,
        "estimated_time_ms": execution.estimated_time_ms,
        "total_cost_usd": execution.total_cost_usd,
        "total_time_ms": execution.total_time_ms,
        "created_at": iso(execution.created_at),
        "started_at": iso(execution.started_at),
        "completed_at": iso(execution.completed_at),
        "progress_url": f"/progress/{execution.execution_id}",
        "estimate": execution.estimate,
    }
    if stages is not None:
        body["stages"] = [
            {
                "stage_id": s.stage_id,
                "stage": s.stage_name,
                "worker": s.worker_name,
                "action": s.action,
                "order": s.stage_order,
                "status": s.status,
                "attempts": s.attempts,
                "cost_usd": s.cost_usd or 0.0,
                "time_ms": s.time_ms,
                "cache_hit": s.cache_hit,
                "started_at": iso(s.started_at),
                "completed_at": iso(s.completed_at),
                "summary": s.summary_data,
                "data_reference": s.data_reference,
                "error": s.error,
            }
            for s in stages
        ]
    return body


def live_stages(runtime: Runtime, execution_id: str) -> list[StageExecution]:
    """Stage rows, brought up to date from the run's live Redis state while it runs."""
    state = RunState(runtime.redis)
    execution = coordinator.load(runtime, execution_id)
    if execution.status == ExecutionStatus.RUNNING and state.exists(execution_id):
        coordinator.persist(
            runtime, execution_id, state.stages(execution_id), state.packets(execution_id)
        )
    with runtime.db.session() as session:
        return list(
            session.scalars(
                select(StageExecution)
                .where(StageExecution.execution_id == execution_id)
                .order_by(StageExecution.stage_order)
            )
        )


def describe(runtime: Runtime, execution_id: str) -> dict[str, Any]:
    """The execution with its stages, as of now."""
    stages = live_stages(runtime, execution_id)
    return serialize(coordinator.load(runtime, execution_id), stages)


def deliverables(runtime: Runtime, execution_id: str) -> list[dict[str, Any]]:
    """The run's outputs for people, with time-limited download URLs."""
    with runtime.db.session() as session:
        rows = session.scalars(
            select(Deliverable)
            .where(Deliverable.execution_id == execution_id)
            .order_by(Deliverable.name)
        ).all()
    items = []
    for row in rows:
        try:
            url = runtime.store.presigned_url(row.storage_key, expires=DOWNLOAD_URL_TTL)
        except NotFound:
            url = None  # expired or removed: listed, but no longer downloadable
        items.append(
            {
                "name": row.name,
                "content_type": row.content_type,
                "size_bytes": row.size_bytes,
                "checksum": row.checksum,
                "expires_at": iso(row.expires_at),
                "url": url,
                "url_expires_in_s": int(DOWNLOAD_URL_TTL.total_seconds()),
            }
        )
    return items

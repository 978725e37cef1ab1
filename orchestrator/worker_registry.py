"""The ``worker_registry`` table: this codebase's worker types, their averages and health.

Averages come from the stages that ran; health from a Celery ping of each type's queue
workers (beat refreshes it; ``GET /workers`` reads it).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from orchestrator.db import StageExecution, WorkerRegistry
from orchestrator.runtime import Runtime


def refresh(runtime: Runtime, *, ping: bool = False) -> None:
    """Upsert a row per registered worker type with its averages (and, with ``ping``, health)."""
    alive: set[str] = set()
    if ping:
        replies = runtime.celery.control.ping(timeout=1.0) or []
        alive = {name.split("@", 1)[0] for reply in replies for name in reply}
    with runtime.db.session() as session:
        averages = {
            worker: (avg_time, avg_cost, count)
            for worker, avg_time, avg_cost, count in session.execute(
                select(
                    StageExecution.worker_name,
                    func.avg(StageExecution.time_ms),
                    func.avg(StageExecution.cost_usd),
                    func.count(),
                )
                .where(StageExecution.status == "completed")
                .group_by(StageExecution.worker_name)
            )
        }
        for kind in runtime.registry:
            row = session.get(WorkerRegistry, kind.name)
            if kind.internal:  # test and benchmark types are not deployed: not in the registry
                if row is not None and row.origin == "internal":
                    session.delete(row)
                continue
            described = kind.describe()
            if row is None:
                row = WorkerRegistry(worker_name=kind.name, origin="internal")
                session.add(row)
            row.display_name = described["display_name"]
            row.capabilities = described["capabilities"]
            row.resource_requirements = {
                "max_concurrent": runtime.pool.workers.max_for(kind.name),
                **described["resource_requirements"],
            }
            avg_time, avg_cost, count = averages.get(kind.name, (None, None, 0))
            row.avg_execution_time_ms = int(avg_time) if avg_time is not None else None
            row.avg_cost_usd = float(avg_cost) if avg_cost is not None else None
            row.executions_count = int(count)
            if ping:
                row.health_status = "healthy" if kind.name in alive else "unreachable"
                row.last_health_check = datetime.now(UTC)

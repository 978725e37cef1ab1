"""The ``resource_usage`` ledger: actual use per stage, written once per idempotency key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from orchestrator.core import quota
from orchestrator.db import Database, ResourceUsage

#: Resource types as the plan names them, by how the pool file declares the resource.
RESOURCE_TYPES = ("api", "quota", "worker", "storage")


def record_usage(
    database: Database,
    *,
    execution_id: str,
    stage_id: str,
    resource: str,
    quantity: float,
    cost_usd: float,
    idempotency_key: str,
    resource_type: str = "api",
) -> bool:
    """Insert one usage row; False (and nothing written) if the key was recorded before.

    A stage redelivered after its worker died settles again with the same key, so its usage
    is never counted twice.
    """
    try:
        with database.session() as session:
            exists = session.scalar(
                select(ResourceUsage.usage_id).where(
                    ResourceUsage.idempotency_key == idempotency_key
                )
            )
            if exists:
                return False
            session.add(
                ResourceUsage(
                    usage_id=uuid.uuid4().hex,
                    resource_type=resource_type,
                    resource_name=resource,
                    execution_id=execution_id,
                    stage_id=stage_id,
                    quantity_used=quantity,
                    cost_usd=cost_usd,
                    idempotency_key=idempotency_key,
                )
            )
    except IntegrityError:
        return False  # a concurrent duplicate won the race
    return True


def usage_totals(database: Database, now_ms: int) -> dict[str, tuple[float, float]]:
    """Units used per resource in the UTC day and month of ``now_ms``, from the ledger: what
    admission's counters are rebuilt from when Redis lost them."""
    day = quota.day_window(now_ms)
    year, month, _ = quota.civil_from_days(day)
    month_start = quota.days_from_civil(year, month, 1) * quota.DAY_MS
    day_start = day * quota.DAY_MS

    def since(start_ms: int) -> dict[str, float]:
        start = datetime.fromtimestamp(start_ms / 1000, UTC)
        with database.session() as session:
            rows = session.execute(
                select(ResourceUsage.resource_name, func.sum(ResourceUsage.quantity_used))
                .where(ResourceUsage.timestamp >= start)
                .group_by(ResourceUsage.resource_name)
            ).all()
        return {name: float(total or 0.0) for name, total in rows}

    today, this_month = since(day_start), since(month_start)
    return {name: (today.get(name, 0.0), total) for name, total in this_month.items()}

"""The ``resource_usage`` ledger: actual use per stage, written once per idempotency key."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from orchestrator.core import quota
from orchestrator.db import Database, ResourceUsage

#: Resource types as the plan names them, by how the pool file declares the resource.
RESOURCE_TYPES = ("api", "quota", "worker", "storage")


@dataclass(frozen=True)
class Usage:
    """One stage's actual use of one resource, as the ledger keeps it."""

    execution_id: str
    stage_id: str
    resource: str
    quantity: float
    cost_usd: float
    idempotency_key: str
    resource_type: str = "api"


def record_usages(database: Database, usages: Sequence[Usage]) -> set[str]:
    """Insert the usage rows whose key was never recorded, in one statement; returns the
    keys written now.

    A stage redelivered after its worker died settles again with the same keys, so its
    usage is never counted twice (a concurrent duplicate loses on the unique key).
    """
    if not usages:
        return set()
    rows = [
        {
            "usage_id": uuid.uuid4().hex,
            "resource_type": u.resource_type,
            "resource_name": u.resource,
            "execution_id": u.execution_id,
            "stage_id": u.stage_id,
            "quantity_used": u.quantity,
            "cost_usd": u.cost_usd,
            "idempotency_key": u.idempotency_key,
            "timestamp": datetime.now(UTC),
        }
        for u in usages
    ]
    with database.session() as session:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        written = session.scalars(
            dialect.insert(ResourceUsage)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[ResourceUsage.idempotency_key])
            .returning(ResourceUsage.idempotency_key)
        )
        return {key for key in written if key is not None}


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

"""The ``resource_usage`` ledger: actual use per stage, written once per idempotency key."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

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

"""Deliverables: the files a run produces for people (reports), in object storage + a row."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

from sqlalchemy import select

from orchestrator.db import Deliverable
from orchestrator.runtime import Runtime

#: Deliverables outlive stage outputs: a report is kept for 30 days.
DELIVERABLE_TTL = timedelta(days=30)


def record_deliverable(
    runtime: Runtime, execution_id: str, stage_id: str, name: str, data: bytes, content_type: str
) -> str:
    """Store ``data`` as the run's deliverable ``name`` (idempotent) and return its key."""
    key = f"deliverables/{execution_id}/{name}"
    stored = runtime.store.put_bytes(key, data, content_type=content_type, ttl=DELIVERABLE_TTL)
    with runtime.db.session() as session:
        row = session.scalar(
            select(Deliverable).where(
                Deliverable.execution_id == execution_id, Deliverable.name == name
            )
        )
        if row is None:
            row = Deliverable(deliverable_id=uuid.uuid4().hex, execution_id=execution_id, name=name)
            session.add(row)
        row.stage_id = f"{execution_id}.{stage_id}"
        row.storage_key = stored.key
        row.content_type = content_type
        row.size_bytes = stored.size_bytes
        row.checksum = hashlib.sha256(data).hexdigest()
        row.expires_at = stored.expires_at
    return stored.key

"""Tables: the plan's four (same names, same columns) plus what the product needs.

Columns the plan names keep its names; ``JSON`` is native on PostgreSQL and text on SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class PipelineExecution(Base):
    __tablename__ = "pipeline_executions"

    execution_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str | None] = mapped_column(String(200))
    client_id: Mapped[str | None] = mapped_column(String(200))
    template_name: Mapped[str] = mapped_column(String(200))
    template_version: Mapped[int] = mapped_column(Integer, default=1)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    status: Mapped[str] = mapped_column(String(32), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    estimated_cost_usd: Mapped[float | None] = mapped_column(Float)
    estimated_time_ms: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    total_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    total_time_ms: Mapped[int | None] = mapped_column(Integer)
    #: Stages a resume must run again (None: all of them); how often the run was resumed.
    rerun_stages: Mapped[list[Any] | None] = mapped_column(JSON)
    resume_count: Mapped[int] = mapped_column(Integer, default=0)
    #: The estimate stated at submission: time quantiles, cost, per stage (for accuracy).
    estimate: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    stages: Mapped[list[StageExecution]] = relationship(
        back_populates="execution", order_by="StageExecution.stage_order", lazy="selectin"
    )

    __table_args__ = (
        # request_id is idempotent per client: the same request twice is one execution.
        UniqueConstraint("client_id", "request_id", name="uq_execution_client_request"),
        Index("ix_executions_client_status", "client_id", "status", "created_at"),
        Index("ix_executions_status", "status"),
        Index("ix_executions_template", "template_name", "created_at"),
    )


class StageExecution(Base):
    __tablename__ = "stage_executions"

    #: ``<execution_id>.<stage name>``: one row per stage of a run, stable across retries.
    stage_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    execution_id: Mapped[str] = mapped_column(
        ForeignKey("pipeline_executions.execution_id", ondelete="CASCADE")
    )
    stage_name: Mapped[str] = mapped_column(String(200))
    worker_name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(200))
    stage_order: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    task_id: Mapped[str | None] = mapped_column(String(64))
    data_reference: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    summary_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    time_ms: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: What was known of the stage before it ran (its params as numbers, its upstream
    #: stages, the resources it may use): the estimator learns from these.
    features: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    execution: Mapped[PipelineExecution] = relationship(back_populates="stages")

    __table_args__ = (Index("ix_stages_execution", "execution_id", "stage_order"),)


class ResourceUsage(Base):
    __tablename__ = "resource_usage"

    usage_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(32))  # api, quota, worker, storage
    resource_name: Mapped[str] = mapped_column(String(200))
    execution_id: Mapped[str | None] = mapped_column(String(64))
    stage_id: Mapped[str | None] = mapped_column(String(300))
    quantity_used: Mapped[float] = mapped_column(Float)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    #: Makes settlement idempotent: a redelivered stage cannot record its usage twice.
    idempotency_key: Mapped[str | None] = mapped_column(String(400), unique=True)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_usage_execution", "execution_id"),
        Index("ix_usage_resource_time", "resource_name", "timestamp"),
    )


class WorkerRegistry(Base):
    __tablename__ = "worker_registry"

    worker_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    capabilities: Mapped[list[Any]] = mapped_column(default=list)
    resource_requirements: Mapped[dict[str, Any]] = mapped_column(default=dict)
    avg_execution_time_ms: Mapped[int | None] = mapped_column(Integer)
    avg_cost_usd: Mapped[float | None] = mapped_column(Float)
    health_status: Mapped[str] = mapped_column(String(32), default="unknown")
    last_health_check: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: ``internal`` for worker types of this codebase, ``external`` for registered ones.
    origin: Mapped[str] = mapped_column(String(16), default="internal")
    endpoint: Mapped[str | None] = mapped_column(String(500))
    executions_count: Mapped[int] = mapped_column(Integer, default=0)


class TemplateVersion(Base):
    __tablename__ = "templates"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column()
    source: Mapped[str | None] = mapped_column(Text)  # the YAML as written
    checksum: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))


class Deliverable(Base):
    __tablename__ = "deliverables"

    deliverable_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    execution_id: Mapped[str] = mapped_column(
        ForeignKey("pipeline_executions.execution_id", ondelete="CASCADE")
    )
    stage_id: Mapped[str | None] = mapped_column(String(300))
    name: Mapped[str] = mapped_column(String(300))
    storage_key: Mapped[str] = mapped_column(String(1000))
    content_type: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(Integer)
    checksum: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("execution_id", "name", name="uq_deliverable_name"),
        Index("ix_deliverables_execution", "execution_id"),
    )


class ApiKey(Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: SHA-256 of the secret; the secret itself is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))  # client, monitor, worker, admin
    client_id: Mapped[str | None] = mapped_column(String(200))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

"""The database adapter: SQLAlchemy 2 models and the session factory."""

from orchestrator.db.models import (
    ApiKey,
    Base,
    Deliverable,
    PipelineExecution,
    ResourceUsage,
    StageExecution,
    TemplateVersion,
    WorkerRegistry,
)
from orchestrator.db.session import Database

__all__ = [
    "ApiKey",
    "Base",
    "Database",
    "Deliverable",
    "PipelineExecution",
    "ResourceUsage",
    "StageExecution",
    "TemplateVersion",
    "WorkerRegistry",
]

"""What the API answers, as typed dictionaries (the JSON as it comes, with its keys named),
and the events of a run's progress stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

Priority = Literal["high", "normal", "low"]

#: Statuses a run ends with.
TERMINAL = frozenset({"completed", "stopped", "failed", "cancelled"})


class StageView(TypedDict):
    stage_id: str
    stage: str
    worker: str
    action: str
    order: int
    status: str
    attempts: int
    cost_usd: float
    time_ms: int | None
    cache_hit: bool
    started_at: str | None
    completed_at: str | None
    summary: dict[str, Any] | None
    data_reference: dict[str, Any] | None
    error: str | None


class Execution(TypedDict, total=False):
    execution_id: str
    request_id: str | None
    client_id: str | None
    template_name: str
    template_version: int
    parameters: dict[str, Any] | None
    priority: str
    status: str
    error: str | None
    estimated_cost_usd: float | None
    estimated_time_ms: int | None
    total_cost_usd: float | None
    total_time_ms: int | None
    created_at: str | None
    started_at: str | None
    completed_at: str | None
    progress_url: str
    stages: list[StageView] | None


class ExecutionPage(TypedDict):
    items: list[Execution]
    total: int
    limit: int
    offset: int


class Deliverable(TypedDict):
    name: str
    content_type: str
    size_bytes: int
    checksum: str
    expires_at: str | None
    url: str | None
    url_expires_in_s: int


class Estimate(TypedDict, total=False):
    feasible: bool
    estimated_cost_usd: float
    estimated_time_ms: int
    confidence: float
    confidence_runs: int
    time_ms: dict[str, float]
    cost_usd: dict[str, float]
    overhead_ms: int
    queue_wait_ms: int
    resource_availability: dict[str, Any]
    breakdown: list[dict[str, Any]]
    reasons: list[str]


class TemplateView(TypedDict, total=False):
    name: str
    version: int
    definition: dict[str, Any]
    parameters_schema: dict[str, Any]


@dataclass(frozen=True)
class Event:
    """One event of a run's progress stream; ``id`` is what ``Last-Event-ID`` resumes from."""

    id: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))

    @property
    def final(self) -> bool:
        """The run's last event: its ``status`` is the run's terminal status."""
        return self.type == "final"

    @property
    def stage(self) -> str | None:
        return self.data.get("stage")

    @property
    def status(self) -> str | None:
        return self.data.get("status")

    @property
    def progress(self) -> float | None:
        return self.data.get("progress")

    @property
    def message(self) -> str:
        return str(self.data.get("message") or "")

"""Request and response bodies: one pydantic definition validates, serialises, and becomes
the OpenAPI schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: The largest INTEGER a column holds; offsets, versions and averages beyond it are refused.
MAX_INT = 2**31 - 1


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class EstimateBody(_Body):
    template_name: str = Field(min_length=1, max_length=200)
    parameters: dict[str, Any] = Field(default_factory=dict)


class StageEstimateOut(BaseModel):
    stage: str
    worker: str
    action: str
    cost_usd: float
    time_ms: int = Field(description="the stage's predicted median time")
    time: dict[str, float] = Field(description="p10, p50, p90 of the stage's time (ms)")
    source: str = Field(description='"history" or "template hint"')
    method: str | None = Field(
        default=None, description='"llm" or "offline" for a stage whose resources need an LLM'
    )
    resources: dict[str, float]


class EstimateOut(BaseModel):
    feasible: bool
    estimated_cost_usd: float = Field(description="the expected cost (cost_usd.expected)")
    estimated_time_ms: int = Field(description="the median time (time_ms.p50)")
    confidence: float = Field(
        description="share of recent runs whose actual time fell inside their stated "
        "p10-p90 interval (0.8, the nominal coverage, before any run finished)"
    )
    confidence_runs: int = Field(description="how many finished runs confidence rests on")
    time_ms: dict[str, float] = Field(description="p10, p50, p90 of the run's time (ms)")
    cost_usd: dict[str, float] = Field(description="expected and p90 cost (USD)")
    overhead_ms: int = Field(description="the engine's own share of the median")
    queue_wait_ms: int = Field(description="the wait for runs ahead, included in the time")
    resource_availability: dict[str, Any]
    breakdown: list[StageEstimateOut]
    reasons: list[str]


class AccuracyQuery(BaseModel):
    template: str | None = Field(default=None, max_length=200)
    last: int = Field(default=100, ge=1, le=10_000)


class AccuracyOut(BaseModel):
    runs: int
    time_median_abs_pct_error: float | None
    cost_median_abs_pct_error: float | None
    interval_coverage: float | None
    within_p90: float | None
    templates: dict[str, Any]
    stages: dict[str, Any]


class ForecastOut(BaseModel):
    arrivals_per_minute: float
    method: str
    history_minutes: int


class BacklogOut(BaseModel):
    stages: int
    work_s: float


class WorkerScalingOut(BaseModel):
    capacity: int
    active: int
    #: Busy slot-time over available slot-time per window ("1m", "15m", "1h").
    utilization: dict[str, float | None]
    forecast: ForecastOut
    service_s: float
    backlog: BacklogOut
    min_workers: int
    max_workers: int
    quota_cap: int | None
    desired_workers: int
    demanded_workers: int
    reason: str


class ScalingOut(BaseModel):
    horizon_s: float
    worker_types: dict[str, WorkerScalingOut]


class ExecuteBody(_Body):
    request_id: str = Field(min_length=1, max_length=200)
    template_name: str = Field(min_length=1, max_length=200)
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: Literal["high", "normal", "low"] = "normal"


class ExecuteOut(BaseModel):
    execution_id: str
    status: str
    estimated_completion: str | None
    progress_url: str


class ExecutionPath(BaseModel):
    execution_id: str = Field(max_length=64)


class ExecutionsQuery(BaseModel):
    status: str | None = Field(default=None, max_length=32)
    template: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_INT)


class StageOut(BaseModel):
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


class ExecutionOut(BaseModel):
    execution_id: str
    request_id: str | None
    client_id: str | None
    template_name: str
    template_version: int
    #: None to a monitor key, which never reads a client's parameters.
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
    #: What the run was told before it started: ``time_ms`` (p10, p50, p90), ``cost_usd`` and
    #: each stage's time interval (``stages``); none for runs recorded before estimates.
    estimate: dict[str, Any] | None = None
    stages: list[StageOut] | None = None


class ExecutionList(BaseModel):
    items: list[ExecutionOut]
    total: int
    limit: int
    offset: int


class DeliverableOut(BaseModel):
    name: str
    content_type: str
    size_bytes: int
    checksum: str
    expires_at: str | None
    url: str | None
    url_expires_in_s: int


class DeliverablesOut(BaseModel):
    execution_id: str
    deliverables: list[DeliverableOut]


class TemplatePath(BaseModel):
    name: str = Field(max_length=200)


class TemplateQuery(BaseModel):
    version: int | None = Field(default=None, ge=1, le=MAX_INT)


class TemplateBody(_Body):
    """A template as JSON (the same fields as the YAML files), or its YAML text in ``yaml``."""

    definition: dict[str, Any] | None = None
    yaml: str | None = Field(default=None, max_length=200_000)


class TemplateOut(BaseModel):
    name: str
    version: int
    definition: dict[str, Any]
    parameters_schema: dict[str, Any] = Field(
        description="the template's parameters as a JSON Schema (draft 2020-12)"
    )


class TemplatePutOut(BaseModel):
    name: str
    version: int
    created: bool


class WorkerRegisterBody(_Body):
    worker_name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)
    display_name: str | None = Field(default=None, max_length=200)
    capabilities: list[str] = Field(default_factory=list, max_length=100)
    resource_requirements: dict[str, Any] = Field(default_factory=dict)
    endpoint: str | None = Field(default=None, max_length=500)


class HeartbeatBody(_Body):
    status: Literal["healthy", "degraded", "unhealthy"] = "healthy"
    avg_execution_time_ms: int | None = Field(default=None, ge=0, le=MAX_INT)
    avg_cost_usd: float | None = Field(default=None, ge=0)


class WorkerOut(BaseModel):
    worker_name: str
    display_name: str | None
    capabilities: list[Any]
    resource_requirements: dict[str, Any]
    avg_execution_time_ms: int | None
    avg_cost_usd: float | None
    health_status: str
    last_health_check: str | None
    origin: str


class OkOut(BaseModel):
    ok: bool = True
    status: str | None = None

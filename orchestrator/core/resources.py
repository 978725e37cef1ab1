"""The resource pool an operator declares in ``resources.yaml`` (the plan's ``ResourcePool``).

Pure: ``parse_resources`` validates text and names the field at fault; loading the file is
the only I/O, in ``load_resources``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import ValidationFailed


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceLimit(_Strict):
    """An external API or a send quota: calendar-window limits, a rate, a price."""

    kind: str = Field(default="api", pattern="^(api|quota)$")
    unit: str = "unit"
    daily_limit: float | None = Field(default=None, gt=0)
    monthly_limit: float | None = Field(default=None, gt=0)
    rate_limit_per_minute: float | None = Field(default=None, gt=0)
    unit_price_usd: float = Field(default=0.0, ge=0)
    #: A capability the resource exists only with: ``llm`` (an LLM is configured,
    #: ``ORCH_LLM_BASE_URL``). Without it, stages run their offline methods and the resource
    #: is neither reserved nor priced.
    needs: Literal["llm"] | None = None

    @model_validator(mode="after")
    def _month_holds_a_day(self) -> ResourceLimit:
        if self.daily_limit and self.monthly_limit and self.daily_limit > self.monthly_limit:
            raise ValueError("daily_limit cannot exceed monthly_limit")
        return self


#: A count of workers (slots, pool processes) in resources.yaml.
Count = Annotated[int, Field(ge=0, le=10_000)]


class WorkerCapacity(_Strict):
    default_max_concurrent: int = Field(default=4, ge=0, le=10_000)
    max_concurrent: dict[str, Count] = Field(default_factory=dict)
    #: Autoscaling bounds per worker type (``GET /scaling``, ``orchestrator workers
    #: --autoscale``): never fewer than ``min``, never more than ``max`` (default: its slots).
    default_min_workers: Count = 1
    min_workers: dict[str, Count] = Field(default_factory=dict)
    max_workers: dict[str, Count] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _min_below_max(self) -> WorkerCapacity:
        for worker in sorted(set(self.min_workers) | set(self.max_workers)):
            low, high = self.bounds_for(worker)
            if low > high:
                raise ValueError(f"min_workers of {worker} ({low}) exceeds its max ({high})")
        return self

    def max_for(self, worker_type: str) -> int:
        return self.max_concurrent.get(worker_type, self.default_max_concurrent)

    def bounds_for(self, worker_type: str) -> tuple[int, int]:
        """(min, max) workers of the type; max defaults to its capacity slots, and min is
        never above a max that is only a default."""
        high = self.max_workers.get(worker_type, self.max_for(worker_type))
        low = self.min_workers.get(worker_type, min(self.default_min_workers, high))
        return low, high


class StorageLimits(_Strict):
    object_storage_bytes: int | None = Field(default=None, gt=0)
    redis_bytes: int | None = Field(default=None, gt=0)


class AdmissionLimits(_Strict):
    #: Runs one client may have waiting for admission at once; more are answered 429.
    max_waiting_runs_per_client: int = Field(default=1000, ge=1, le=1_000_000)
    #: Seconds of waiting worth one priority level: a low run that has waited two periods
    #: longer than a high one goes before it, so no run waits forever behind newer ones.
    aging_period_s: float = Field(default=300.0, ge=1, le=30 * 86400)
    #: Waiting runs past a blocked head that admission looks at for one that may go ahead
    #: of it (backfilling); 0 admits in strict queue order. Bounds the work of one pass.
    backfill_depth: int = Field(default=100, ge=0, le=1000)


class ResourcePool(_Strict):
    resources: dict[str, ResourceLimit] = Field(default_factory=dict)
    workers: WorkerCapacity = Field(default_factory=WorkerCapacity)
    storage: StorageLimits = Field(default_factory=StorageLimits)
    admission: AdmissionLimits = Field(default_factory=AdmissionLimits)
    #: Seconds a reservation or capacity slot lives without being renewed.
    lease_ttl_s: float = Field(default=60.0, ge=1, le=3600)

    def price(self, resource: str) -> float:
        limit = self.resources.get(resource)
        return limit.unit_price_usd if limit else 0.0

    def prices(self) -> dict[str, float]:
        return {name: limit.unit_price_usd for name, limit in self.resources.items()}

    def needs(self) -> dict[str, str]:
        """Resource -> the capability it needs, for the resources that need one."""
        return {name: limit.needs for name, limit in self.resources.items() if limit.needs}

    def unusable(self, capabilities: set[str]) -> set[str]:
        """Resources that do not exist without a capability missing from ``capabilities``."""
        return {name for name, need in self.needs().items() if need not in capabilities}


def parse_resources(text: str, *, source: str = "resources.yaml") -> ResourcePool:
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"{source}: invalid YAML: {exc}") from None
    try:
        return ResourcePool.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "pool"
        raise ValidationFailed(
            f"{source}: {where}: {first['msg']}",
            details=[
                {"where": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in exc.errors()
            ],
        ) from None


def load_resources(path: Path) -> ResourcePool:
    """The pool of ``path``; a missing file is an empty pool (no limits, default capacity)."""
    if not path.exists():
        return ResourcePool()
    return parse_resources(path.read_text(), source=str(path))

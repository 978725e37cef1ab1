"""Admission: reserve everything a run needs in Redis before it starts, as leases.

The Lua scripts in ``orchestrator/lua/`` do the work atomically (``common.lua`` is their
shared prelude); this class only builds their arguments and reads the pool for
``GET /resources``. The same window and rate rules live, testable without Redis, in
``orchestrator.core.quota``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources as package_files
from typing import Any, Literal

import redis

from orchestrator.constants import REDIS_PREFIX, Priority
from orchestrator.core import quota
from orchestrator.core.resources import ResourcePool

PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
#: Spacing of priority bands in the pending queue's score (beyond any epoch millisecond).
BAND = 10**13


@dataclass(frozen=True)
class RunNeeds:
    """What a whole run needs: resource units in total, and stages per worker type."""

    quotas: dict[str, float] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    status: Literal["admitted", "queued", "refused"]
    reasons: list[str] = field(default_factory=list)
    retry_after_s: float | None = None


def _script(name: str) -> str:
    lua = package_files.files("orchestrator") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Admission:
    """Quotas, rates, cooldowns and capacity for every process, on one Redis."""

    def __init__(
        self, client: redis.Redis, pool: ResourcePool, *, lease_ttl_s: float | None = None
    ):
        self.redis = client
        self.pool = pool
        self.lease_ttl_ms = int((lease_ttl_s or pool.lease_ttl_s) * 1000)
        self.prefix = REDIS_PREFIX
        self._limits = json.dumps(
            {
                name: {
                    "d": limit.daily_limit or 0,
                    "m": limit.monthly_limit or 0,
                    "r": limit.rate_limit_per_minute or 0,
                }
                for name, limit in pool.resources.items()
            }
        )
        self._scripts = {
            name: client.register_script(_script(name))
            for name in ("reserve", "release", "admit", "renew", "settle", "slot", "rate")
        }

    # -- runs ----------------------------------------------------------------------------

    def reserve(
        self, run_id: str, needs: RunNeeds, priority: Priority, *, wait: bool = True
    ) -> Decision:
        """All of ``needs`` or nothing; a run that cannot fit now waits (or is told when)."""
        never = [
            f"worker type {worker} has no capacity (max_concurrent is 0)"
            for worker in needs.workers
            if self.pool.workers.max_for(worker) == 0
        ]
        if never:
            return Decision("refused", never)
        score = PRIORITY_RANK[Priority(priority)] * BAND + int(time.time() * 1000)
        status, reasons, retry_ms = self._scripts["reserve"](
            args=[
                self.prefix,
                run_id,
                json.dumps(needs.quotas),
                self._limits,
                self.lease_ttl_ms,
                score,
                "1" if wait else "0",
            ]
        )
        retry = int(retry_ms) / 1000 if int(retry_ms) else None
        return Decision(_text(status), json.loads(_text(reasons)), retry)  # type: ignore[arg-type]

    def renew(self, run_id: str) -> bool:
        return bool(self._scripts["renew"](args=[self.prefix, run_id, self.lease_ttl_ms]))

    def release(self, run_id: str) -> list[str]:
        """Give back everything the run holds; returns runs admitted from the queue now."""
        admitted = self._scripts["release"](
            args=[self.prefix, run_id, self._limits, self.lease_ttl_ms]
        )
        return [_text(a) for a in admitted]

    withdraw = release  # a queued run that is cancelled leaves the queue the same way

    def admit_pending(self) -> list[str]:
        admitted = self._scripts["admit"](args=[self.prefix, self._limits, self.lease_ttl_ms])
        return [_text(a) for a in admitted]

    def settle(
        self, run_id: str, stage_id: str, resource: str, reserved: float, actual: float
    ) -> float:
        """Record one stage's actual use; returns the refund (0 if settled before)."""
        result = _text(
            self._scripts["settle"](
                args=[self.prefix, run_id, stage_id, resource, reserved, actual]
            )
        )
        return 0.0 if result == "dup" else float(result)

    # -- capacity ------------------------------------------------------------------------

    def acquire_slot(self, worker_type: str, holder: str, *, client: Any = None) -> bool:
        """Take a capacity slot; with ``client`` (a pipeline) the call is only queued on it."""
        limit = self.pool.workers.max_for(worker_type)
        result = self._scripts["slot"](
            args=[self.prefix, worker_type, holder, limit, self.lease_ttl_ms], client=client
        )
        return bool(result)

    renew_slot = acquire_slot  # taking a slot one already holds extends its lease

    def release_slot(self, worker_type: str, holder: str, *, client: Any = None) -> list[str]:
        (client or self.redis).zrem(f"{self.prefix}slots:{worker_type}", holder)
        return []

    # -- rates and cooldowns -------------------------------------------------------------

    def acquire_rate(self, resource: str, units: float = 1) -> float:
        """0 if ``units`` calls may go now (and are counted), else seconds to wait."""
        limit = self.pool.resources.get(resource)
        if limit is None or not limit.rate_limit_per_minute:
            return 0.0
        wait_ms = self._scripts["rate"](
            args=[self.prefix, resource, limit.rate_limit_per_minute, units]
        )
        return int(wait_ms) / 1000

    def cooldown(self, resource: str, seconds: float) -> None:
        """Hold ``resource`` for every process (a provider answered 429 with Retry-After)."""
        key = f"{self.prefix}cooldown:{resource}"
        ms = max(1, int(seconds * 1000))
        current = self.redis.pttl(key)
        if current is None or current < ms:
            self.redis.set(key, "1", px=ms)

    def cooldown_remaining(self, resource: str) -> float:
        return max(0, self.redis.pttl(f"{self.prefix}cooldown:{resource}")) / 1000

    # -- the live pool -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Quotas used and left, rates, cooldowns, capacity, leases and the queue."""
        self.admit_pending()
        seconds, micros = self.redis.time()
        now = seconds * 1000 + micros // 1000
        day, month = quota.day_window(now), quota.month_window(now)
        p = self.prefix
        resources: dict[str, Any] = {}
        for name, limit in self.pool.resources.items():
            used_day, used_month, held, tat, cooling = (
                self.redis.pipeline()
                .get(f"{p}c:{name}:d:{day}")
                .get(f"{p}c:{name}:m:{month}")
                .get(f"{p}held:{name}")
                .get(f"{p}rate:{name}")
                .pttl(f"{p}cooldown:{name}")
                .execute()
            )
            rate = limit.rate_limit_per_minute
            current_rate = None
            if rate:
                ahead = max(0.0, float(tat or 0) - now)
                current_rate = round(min(rate, ahead / (60000 / rate)), 2)
            reserved = float(held or 0)
            resources[name] = {
                "kind": limit.kind,
                "unit": limit.unit,
                # Counters hold used + reserved; reservations are reported on their own.
                "used_today": round(max(0.0, float(used_day or 0) - reserved), 6),
                "daily_limit": limit.daily_limit,
                "used_this_month": round(max(0.0, float(used_month or 0) - reserved), 6),
                "monthly_limit": limit.monthly_limit,
                "reserved": round(reserved, 6),
                "rate_limit": rate,
                "current_rate": current_rate,
                "cooldown_s": max(0, cooling or 0) / 1000,
                "unit_price_usd": limit.unit_price_usd,
            }
        workers = {}
        names = set(self.pool.workers.max_concurrent)
        for key in self.redis.scan_iter(match=f"{p}slots:*", count=100):
            names.add(_text(key).removeprefix(f"{p}slots:"))
        for worker in sorted(names):
            active = self.redis.zcount(f"{p}slots:{worker}", now, "+inf")
            workers[worker] = {"max": self.pool.workers.max_for(worker), "active": active}
        return {
            "resources": resources,
            "worker_capacity": workers,
            "leases": self.redis.zcard(f"{p}leases"),
            "pending_runs": self.redis.zcard(f"{p}pending"),
            "lease_ttl_s": self.lease_ttl_ms / 1000,
        }

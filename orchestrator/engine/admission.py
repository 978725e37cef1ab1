"""Admission: reserve everything a run needs in Redis before it starts, as leases.

The Lua scripts in ``orchestrator/engine/lua/`` do the work atomically (``common.lua`` is their
shared prelude); this class only builds their arguments and reads the pool for
``GET /resources``. The same window and rate rules live, testable without Redis, in
``orchestrator.core.quota``.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources as package_files
from typing import Any

import redis

from orchestrator.constants import REDIS_PREFIX, AdmissionDecision, Priority
from orchestrator.core import quota
from orchestrator.core.quota import RunNeeds
from orchestrator.core.resources import ResourcePool
from orchestrator.core.scaling import BUCKET_MS, KEEP_BUCKETS

#: Priority level of a run in the pending queue, whose score is arrival ms + level * the
#: aging period (``reserve.lua``): fresh runs go by priority, and waiting raises a run's rank.
PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
#: A resource's quota state in Redis: seven little-endian doubles (see common.lua).
STATE = struct.Struct("<7d")
SCRIPTS = ("release", "admit", "renew", "settle", "slot", "free", "rate", "cooldown", "seed")
#: Sorted set of runs admitted and not launched yet (score: when), written by the scripts.
ADMITTED_KEY = "admitted"

#: What the ledger says was used, per resource: (today, this month), for ``now_ms``.
LedgerTotals = Callable[[int], dict[str, tuple[float, float]]]


@dataclass(frozen=True)
class Decision:
    status: AdmissionDecision
    reasons: list[str] = field(default_factory=list)
    retry_after_s: float | None = None


#: The common answer, shared (a Decision is read, never changed).
ADMITTED = Decision(AdmissionDecision.ADMITTED)


def _script(name: str, header: str = "", parts: dict[str, str] | None = None) -> str:
    """``header``, then the script with common.lua and quota.lua before it, or where it says
    (``-- @common``, ``-- @quota``: reserve.lua builds those helpers only off its fast path);
    ``parts`` fills its other ``-- @<part>`` lines."""
    lua = package_files.files("orchestrator.engine") / "lua"
    body = (lua / f"{name}.lua").read_text()
    if "-- @common\n" not in body:
        body = "-- @common\n-- @quota\n" + body
    texts = {"common": (lua / "common.lua").read_text(), "quota": (lua / "quota.lua").read_text()}
    texts.update(parts or {})
    return header + re.sub(r"^[ \t]*-- @(\w+)\n", lambda m: texts[m[1]] + "\n", body, flags=re.M)


def _lua_string(text: str) -> str:
    return '"' + "".join(f"\\{byte}" for byte in text.encode()) + '"'


def _queue_header(pool: ResourcePool) -> str:
    """The queue's rules compiled into every script: AGING (ms of waiting worth a priority
    level) and DEPTH (runs past a blocked head looked at for backfilling)."""
    aging_ms, depth = int(pool.admission.aging_period_s * 1000), pool.admission.backfill_depth
    return f"local AGING = {aging_ms}\nlocal DEPTH = {depth}\n"


def _reserve_script(pool: ResourcePool, ttl_ms: int) -> str:
    """reserve.lua with the pool's limits and the lease TTL compiled in, so a reservation
    sends only its needs: inline on its fast path (``-- @limits``: daily, monthly, rate of
    ``res``), as ``limits_of(res)`` after common.lua (``-- @limits_of``)."""
    chain: list[str] = []
    function = ["local function limits_of(res)"]
    for name, limit in pool.resources.items():
        values = (limit.daily_limit, limit.monthly_limit, limit.rate_limit_per_minute)
        numbers = ", ".join(repr(float(v or 0)) for v in values)
        test = f"if res == {_lua_string(name)} then"
        chain.append(f"{'else' if chain else ''}{test} daily, monthly, rate = {numbers}")
        function.append(f"  {test} return {numbers} end")
    function += ["  return 0, 0, 0", "end"]
    limits = ["local daily, monthly, rate = 0, 0, 0"]
    if chain:
        limits = ["local daily, monthly, rate", *chain, "else daily, monthly, rate = 0, 0, 0 end"]
    parts = {"limits": "\n".join(limits), "limits_of": "\n".join(function)}
    return _script("reserve", f"local TTL = {ttl_ms}\n" + _queue_header(pool), parts)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Admission:
    """Quotas, rates, cooldowns and capacity for every process, on one Redis."""

    def __init__(
        self,
        client: redis.Redis,
        pool: ResourcePool,
        *,
        lease_ttl_s: float | None = None,
        ledger: LedgerTotals | None = None,
    ):
        self.redis = client
        self.pool = pool
        self._ledger = ledger
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
        queue = _queue_header(pool)
        self._scripts = {name: client.register_script(_script(name, queue)) for name in SCRIPTS}
        # reserve.lua compiled for this pool and TTL: a reservation sends only its needs.
        self._reserve = client.register_script(_reserve_script(pool, self.lease_ttl_ms))

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
            return Decision(AdmissionDecision.REFUSED, never)
        args: list[Any] = [self.prefix, run_id, PRIORITY_RANK[priority], "1" if wait else "0"]
        for pair in needs.quotas.items():
            args += pair
        decision = self._decide(args)
        if decision.status == AdmissionDecision.UNSEEDED:  # Redis lost the counters: rebuild
            self.seed()
            decision = self._decide(args)
        return decision

    def _decide(self, args: list[Any]) -> Decision:
        result = self._reserve(args=args)
        if result == 1:
            return ADMITTED
        status, reasons, retry_ms = result
        retry = int(retry_ms) / 1000 if int(retry_ms) else None
        return Decision(AdmissionDecision(_text(status)), json.loads(_text(reasons)), retry)

    def seed(self) -> bool:
        """Rebuild the quota counters from the ledger if Redis does not have them (it was
        restarted without persistence); True if this call seeded them."""
        seconds, micros = self.redis.time()
        now = seconds * 1000 + micros // 1000
        totals = self._ledger(now) if self._ledger is not None else {}
        args: list[Any] = [self.prefix, quota.day_window(now), quota.month_window(now)]
        for resource, (today, month) in totals.items():
            args += [resource, today, month]
        return bool(self._scripts["seed"](args=args))

    def spent(self, resources: list[str]) -> tuple[int, dict[tuple[str, str], float]]:
        """Redis time now, and the units of ``resources`` used (settled, not merely held)
        in the current day and month windows: what no release will give back."""
        pipe = self.redis.pipeline(transaction=False)  # one round trip for the clock and all
        pipe.time()
        if resources:
            pipe.hmget(f"{self.prefix}q", resources)
        (seconds, micros), *rest = pipe.execute()
        values: list[Any] = rest[0] if rest else []
        now = seconds * 1000 + micros // 1000
        day, month = quota.day_window(now), quota.month_window(now)
        used: dict[tuple[str, str], float] = {}
        for name, value in zip(resources, values, strict=True):
            if value and len(value) == STATE.size:
                d, du, m, mu, held, _, _ = STATE.unpack(value)
                used[(name, "day")] = max(0.0, du - held) if d == day else 0.0
                used[(name, "month")] = max(0.0, mu - held) if m == month else 0.0
        return now, used

    def load(self) -> tuple[int, int]:
        """Runs holding a lease (running or about to), runs waiting for admission: one trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.prefix + "leases")
        pipe.zcard(self.prefix + "pending")
        running, waiting = pipe.execute()
        return int(running), int(waiting)

    def admitted_before(self, cutoff_ms: int) -> list[str]:
        """Runs admitted before ``cutoff_ms`` (Redis time) whose launch has not happened."""
        key = self.prefix + ADMITTED_KEY
        return [_text(run) for run in self.redis.zrangebyscore(key, "-inf", cutoff_ms)]

    def launched(self, run_id: str) -> None:
        """The run's launch happened (or is moot): it is no longer waiting for one."""
        self.redis.zrem(self.prefix + ADMITTED_KEY, run_id)

    def held(self, run_ids: list[str]) -> set[str]:
        """Those of ``run_ids`` that hold a lease, wait in the queue or wait for their launch
        (one round trip for all of them)."""
        keys = [self.prefix + key for key in ("leases", "pending", ADMITTED_KEY)]
        pipe = self.redis.pipeline(transaction=False)
        for run_id in run_ids:
            for key in keys:
                pipe.zscore(key, run_id)
        scores = pipe.execute()
        return {
            run_id
            for i, run_id in enumerate(run_ids)
            if any(score is not None for score in scores[3 * i : 3 * i + 3])
        }

    def renew(self, run_id: str) -> bool:
        return bool(self._scripts["renew"](args=[self.prefix, run_id, self.lease_ttl_ms]))

    def release(self, run_id: str) -> list[str]:
        """Give back everything the run holds; returns runs admitted from the queue now,
        which the caller must launch (the reconciler does if the caller dies first)."""
        admitted = self._scripts["release"](
            args=[self.prefix, run_id, self._limits, self.lease_ttl_ms]
        )
        return [_text(a) for a in admitted]

    withdraw = release  # a queued run that is cancelled leaves the queue the same way

    def admit_pending(self) -> list[str]:
        """Admit waiting runs that fit now, in the queue's order, backfilling past a blocked
        head (``quota.lua``); the caller must launch them (``coordinator.hand_off``)."""
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

    def acquire_slot(
        self, worker_type: str, holder: str, *, client: Any = None, rank: int | None = None
    ) -> bool:
        """Take a capacity slot; with ``client`` (a pipeline) the call is only queued on it.

        With ``rank`` (its run's ``PRIORITY_RANK``), stages waiting for a slot of the type go
        by priority and age, as runs waiting for admission do (``slot.lua``); a waiter that
        stops asking loses its place after a lease period."""
        limit = self.pool.workers.max_for(worker_type)
        args: list[Any] = [self.prefix, worker_type, holder, limit, self.lease_ttl_ms]
        if rank is not None:
            args += [rank * int(self.pool.admission.aging_period_s * 1000), self.lease_ttl_ms]
        if client is not None:
            # A bare EVALSHA: redis-py would add a SCRIPT EXISTS round trip before every
            # pipeline holding a Script. If Redis lost the script, the pipeline raises
            # NoScriptError and the caller asks again without one (which loads it).
            client.execute_command("EVALSHA", self._scripts["slot"].sha, 0, *args)
            return True
        return bool(self._scripts["slot"](args=args))

    def renew_slot(self, worker_type: str, holder: str) -> bool:
        """Extend a slot ``holder`` still holds; a released one (its run was cancelled or
        finished) is not taken again, so a late renewal cannot leak a slot."""
        args: list[Any] = [self.prefix, worker_type, holder, 0, self.lease_ttl_ms]  # never take
        return bool(self._scripts["slot"](args=args))

    def release_slot(self, worker_type: str, holder: str, *, client: Any = None) -> list[str]:
        """Free a slot and count its busy time (``free.lua``); with ``client`` (a pipeline)
        the calls are only queued on it: a plain ZREM first, so a Redis that lost the script
        (the pipeline then raises NoScriptError) still frees the slot."""
        args: list[Any] = [self.prefix, worker_type, holder, BUCKET_MS, KEEP_BUCKETS]
        if client is not None:
            client.zrem(f"{self.prefix}slots:{worker_type}", holder)
            client.execute_command("EVALSHA", self._scripts["free"].sha, 0, *args)
        else:
            self._scripts["free"](args=args)
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
        self._scripts["cooldown"](args=[self.prefix, resource, max(1, int(seconds * 1000))])

    def cooldown_remaining(self, resource: str) -> float:
        return int(self._scripts["cooldown"](args=[self.prefix, resource, 0])) / 1000

    # -- the live pool -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Quotas used and left, rates, cooldowns, capacity, leases and the queue.

        Read-only: it admits nobody (a reader that admitted runs would have to launch them).
        """
        seconds, micros = self.redis.time()
        now = seconds * 1000 + micros // 1000
        day, month = quota.day_window(now), quota.month_window(now)
        p = self.prefix
        # The quota state hash (see common.lua): resource -> d du m mu held cool tat, packed.
        listed = list(self.pool.resources)
        read: list[Any] = self.redis.hmget(f"{p}q", [*listed, "#seeded"])
        *values, seeded = read
        if seeded is None and self.seed():  # Redis restarted: show what the ledger knows
            values = self.redis.hmget(f"{p}q", listed) if listed else []
        state = {
            name: list(STATE.unpack(value))
            for name, value in zip(listed, values, strict=True)
            if value and len(value) == STATE.size
        }
        resources: dict[str, Any] = {}
        for name, limit in self.pool.resources.items():
            d, du, m, mu, reserved, cool, tat = state.get(name) or [0.0] * 7
            used_day = du if d == day else 0.0
            used_month = mu if m == month else 0.0
            cooling = cool - now
            rate = limit.rate_limit_per_minute
            current_rate = None
            if rate:
                ahead = max(0.0, tat - now)
                current_rate = round(min(rate, ahead / (60000 / rate)), 2)
            resources[name] = {
                "kind": limit.kind,
                "unit": limit.unit,
                # Counters hold used + reserved; reservations are reported on their own.
                "used_today": round(max(0.0, used_day - reserved), 6),
                "daily_limit": limit.daily_limit,
                "used_this_month": round(max(0.0, used_month - reserved), 6),
                "monthly_limit": limit.monthly_limit,
                "reserved": round(reserved, 6),
                "rate_limit": rate,
                "current_rate": current_rate,
                "cooldown_s": max(0.0, cooling) / 1000,
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
            "admitted_runs": self.redis.zcard(f"{p}{ADMITTED_KEY}"),
            "lease_ttl_s": self.lease_ttl_ms / 1000,
        }

"""Utilization and desired capacity per worker type: the data, gathered for ``core.scaling``.

Busy time comes from Redis (``lua/free.lua`` counts each slot's held interval when it is
released; slots held now count up to now). The forecast reads stage rows (arrivals and
service times), the backlog reads the broker's queues and the runs waiting for admission or
for their launch, whose stages' times the estimator predicts. ``GET /scaling``, ``GET
/resources``, the metrics and ``orchestrator workers --autoscale`` all read ``report``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from orchestrator.constants import REDIS_PREFIX
from orchestrator.core import scaling
from orchestrator.db import StageExecution
from orchestrator.engine.admission import ADMITTED_KEY
from orchestrator.engine.estimates import knowledge
from orchestrator.engine.recovery import QueueDepths

if TYPE_CHECKING:
    from orchestrator.runtime import Runtime

#: Minutes of stage history the forecast reads: two days and an hour, so the daily season
#: can be fitted once that much history exists.
HISTORY_MINUTES = 49 * 60
#: The horizon desired capacity is sized for: the backlog should drain within it. Short, so
#: that a queue building up is a queue wait of seconds, not minutes (a burst lasts a minute
#: or two; the minute-by-minute forecast sees it only afterwards). Shrinking waits out its
#: own hold time in the autoscaler, so a short horizon does not make the pool flap.
HORIZON_S = 15.0
#: A stage's service time when nothing has been learned about its worker type.
DEFAULT_SERVICE_S = 1.0
#: A report is reused this long per process (Prometheus scrapes and the dashboard poll).
CACHE_S = 10.0

_cache: dict[str, tuple[float, dict[str, Any]]] = {}


def worker_types(runtime: Runtime) -> list[str]:
    """The worker types this process knows (test types only when it loaded them) and every
    type resources.yaml names."""
    return sorted(set(runtime.registry.names()) | set(runtime.pool.workers.max_concurrent))


def utilization(runtime: Runtime, workers: list[str] | None = None) -> dict[str, Any]:
    """Per worker type: capacity, slots held now, busy share of each window (1m, 15m, 1h)."""
    workers = workers if workers is not None else worker_types(runtime)
    pipe = runtime.redis.pipeline(transaction=False)
    pipe.time()
    for worker in workers:
        pipe.hgetall(f"{REDIS_PREFIX}busy:{worker}")
        pipe.hgetall(f"{REDIS_PREFIX}slot_start:{worker}")
        pipe.zrangebyscore(f"{REDIS_PREFIX}slots:{worker}", "(0", "+inf", withscores=True)
    seconds, micros, *replies = _flat(pipe.execute())
    now = seconds * 1000 + micros // 1000
    out: dict[str, Any] = {}
    for i, worker in enumerate(workers):
        buckets, starts, held = replies[3 * i : 3 * i + 3]
        live = {_text(h) for h, deadline in held if deadline > now}
        since = [int(v) for h, v in starts.items() if _text(h) in live]
        _forget(runtime, worker, [h for h in starts if _text(h) not in live])
        busy = {int(b): float(v) for b, v in buckets.items()}
        capacity = runtime.pool.workers.max_for(worker)
        windows = {}
        for label, window in scaling.WINDOWS.items():
            spent = scaling.busy_ms(busy, since, now_ms=now, window_ms=window)
            ratio = scaling.utilization(spent, capacity, window)
            windows[label] = None if ratio is None else round(ratio, 6)
        out[worker] = {"capacity": capacity, "active": len(live), "utilization": windows}
    return out


def _flat(replies: list[Any]) -> list[Any]:
    seconds, micros = replies[0]
    return [int(seconds), int(micros), *replies[1:]]


def _forget(runtime: Runtime, worker: str, stale: list[Any]) -> None:
    """Start marks of slots that lapsed (their holder died): no release will count them."""
    if stale:
        runtime.redis.hdel(f"{REDIS_PREFIX}slot_start:{worker}", *stale)


def report(runtime: Runtime, *, fresh: bool = False) -> dict[str, Any]:
    """Utilization, forecast, backlog and desired workers per worker type (cached briefly)."""
    key = runtime.settings.redis_url
    cached = _cache.get(key)
    if not fresh and cached is not None and time.monotonic() - cached[0] < CACHE_S:
        return cached[1]
    built = _build(runtime)
    _cache[key] = (time.monotonic(), built)
    return built


def _build(runtime: Runtime) -> dict[str, Any]:
    workers = worker_types(runtime)
    used = utilization(runtime, workers)
    history = _history(runtime)
    backlog = _backlog(runtime, workers, history)
    pool = runtime.admission.snapshot()["resources"]
    out = {}
    for worker in workers:
        arrivals, service_s = history.get(worker, ([], DEFAULT_SERVICE_S))
        forecast = scaling.forecast_arrivals(arrivals)
        stages, work_s = backlog[worker]
        demand = scaling.Demand(forecast.per_minute, service_s, stages, work_s)
        bounds = _bounds(runtime, worker, service_s, pool)
        sizing = scaling.desired_workers(demand, bounds, horizon_s=HORIZON_S)
        out[worker] = {
            **used[worker],
            "forecast": {
                "arrivals_per_minute": round(forecast.per_minute, 3),
                "method": forecast.method,
                "history_minutes": forecast.history_minutes,
            },
            "service_s": round(service_s, 3),
            "backlog": {"stages": stages, "work_s": round(work_s, 1)},
            "min_workers": bounds.minimum,
            "max_workers": bounds.maximum,
            "quota_cap": bounds.quota_cap,
            "desired_workers": sizing.workers,
            "demanded_workers": sizing.unbounded,
            "reason": sizing.reason,
        }
    return {"horizon_s": HORIZON_S, "worker_types": out}


def _history(runtime: Runtime) -> dict[str, tuple[list[float], float]]:
    """Per worker type: stage starts per minute (oldest first) and mean service seconds."""
    now = datetime.now(UTC)
    cutoff = now - timedelta(minutes=HISTORY_MINUTES)
    starts: dict[str, list[int]] = defaultdict(list)
    times: dict[str, list[float]] = defaultdict(list)
    query = select(
        StageExecution.worker_name,
        StageExecution.started_at,
        StageExecution.time_ms,
        StageExecution.cache_hit,
    ).where(StageExecution.started_at >= cutoff)
    with runtime.db.session() as session:
        for worker, started, took, cached in session.execute(query):
            if started is None:
                continue
            if started.tzinfo is None:  # SQLite keeps no zone: the engine writes UTC
                started = started.replace(tzinfo=UTC)
            starts[worker].append(int(started.timestamp() * 1000))
            if took is not None and not cached:
                times[worker].append(took / 1000)
    now_ms = int(now.timestamp() * 1000)
    return {
        worker: (
            scaling.per_minute_counts(seen, now_ms=now_ms, minutes=HISTORY_MINUTES),
            sum(times[worker]) / len(times[worker]) if times[worker] else DEFAULT_SERVICE_S,
        )
        for worker, seen in starts.items()
    }


def _backlog(
    runtime: Runtime, workers: list[str], history: dict[str, tuple[list[float], float]]
) -> dict[str, tuple[int, float]]:
    """Per worker type: stages waiting now and their predicted seconds of work: messages in
    its queue, and the stages of runs waiting for admission or for their launch."""
    service = {w: history.get(w, ([], DEFAULT_SERVICE_S))[1] for w in workers}
    depths = QueueDepths(runtime)
    out: dict[str, tuple[int, float]] = {}
    for worker in workers:
        queued = depths.depth(worker)
        out[worker] = (queued, queued * service[worker])
    waiting: list[str] = []
    for key in ("pending", ADMITTED_KEY):
        runs: list[Any] = runtime.redis.zrange(REDIS_PREFIX + key, 0, -1)
        waiting += [_text(run) for run in runs]
    if not waiting:
        return out
    models = knowledge(runtime).actions
    query = select(
        StageExecution.worker_name, StageExecution.action, StageExecution.features
    ).where(StageExecution.execution_id.in_(waiting), StageExecution.status == "pending")
    with runtime.db.session() as session:
        for worker, action, features in session.execute(query):
            stages, work = out.get(worker, (0, 0.0))
            learned = models.get((worker, action))
            if learned is not None and learned.time is not None:
                numbers = {k: v for k, v in (features or {}).items() if not k.startswith("_")}
                seconds = learned.time.quantiles(numbers).p50 / 1000
            else:
                seconds = service.get(worker, DEFAULT_SERVICE_S)
            out[worker] = (stages + 1, work + seconds)
    return out


def _bounds(
    runtime: Runtime, worker: str, service_s: float, pool: dict[str, Any]
) -> scaling.Bounds:
    """resources.yaml's min and max, and what the worker type's quotas can feed."""
    low, high = runtime.pool.workers.bounds_for(worker)
    high = min(high, runtime.pool.workers.max_for(worker))
    low = min(low, high)
    registry = runtime.registry  # a type only resources.yaml names has no requirements
    requirements = registry.get(worker).requirements if worker in registry else {}
    names = [*requirements.get("resources", []), *requirements.get("optional_resources", [])]
    usable = [r for r in names if r in runtime.pool.resources and r not in runtime.unusable]
    rates = [
        float(rate)
        for r in usable
        if (rate := runtime.pool.resources[r].rate_limit_per_minute) is not None
    ]
    spent = [r for r in usable if _used_up(pool.get(r))]
    cap = scaling.quota_cap(service_s, rates, exhausted=bool(spent))
    if spent:
        reason = f"quota of {', '.join(spent)} used up until its window resets (UTC)"
    else:
        reason = "per-minute rate of " + ", ".join(usable)
    return scaling.Bounds(low, high, cap, reason)


def _used_up(state: dict[str, Any] | None) -> bool:
    if not state:
        return False
    held = state["reserved"]
    day, month = state["daily_limit"], state["monthly_limit"]
    return bool(
        (day and state["used_today"] + held >= day)
        or (month and state["used_this_month"] + held >= month)
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""Utilization, load forecast and desired capacity per worker type: the arithmetic only.

Pure: the engine's adapter (``orchestrator.engine.scaling``) reads busy time from Redis, stage
history from the database and the backlog from the broker, and hands them here as numbers.

Busy time is kept in buckets of ``BUCKET_MS`` (``lua/free.lua`` adds a stage's interval when
it releases its slot); a window's busy time is the buckets inside it, the bucket cut by its
start prorated, plus the running part of the slots held now. Available time is the worker
type's capacity (slots) times the window.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Width of a busy-time bucket; a 1 h window reads at most 361 of them per worker type.
BUCKET_MS = 10_000
#: Buckets kept per worker type (a little over the longest window).
KEEP_BUCKETS = 400
#: The windows utilization is reported over: label -> milliseconds.
WINDOWS = {"1m": 60_000, "15m": 900_000, "1h": 3_600_000}
#: Below this many minutes of history, the arrival forecast is the plain recent mean.
MIN_SMOOTHING_MINUTES = 30
#: Below MIN_SMOOTHING_MINUTES, the forecast is the mean of this many last minutes.
RECENT_MINUTES = 5
#: Two days of minutes: enough for exponential smoothing with a daily season (hourly sums).
MIN_SEASONAL_MINUTES = 2 * 1440
#: The busy share a sized pool aims at (queueing delay explodes as it nears 1).
TARGET_UTILIZATION = 0.8


# -- utilization -------------------------------------------------------------------------------


def busy_ms(
    buckets: Mapping[int, float],
    live_starts: Iterable[int],
    *,
    now_ms: int,
    window_ms: int,
    bucket_ms: int = BUCKET_MS,
) -> float:
    """Slot-milliseconds busy in ``[now - window, now]``: finished intervals from ``buckets``
    (bucket index -> busy ms in it; a bucket cut by the window's start counts prorated,
    as if its busy time were spread evenly) plus the elapsed part of slots held now."""
    start = now_ms - window_ms
    total = 0.0
    for index, busy in buckets.items():
        lo, hi = index * bucket_ms, min(now_ms, (index + 1) * bucket_ms)
        if hi <= start or lo >= now_ms or hi <= lo:
            continue
        total += busy * (hi - max(lo, start)) / (hi - lo)
    for since in live_starts:
        total += max(0, now_ms - max(since, start))
    return total


def utilization(busy: float, capacity: int, window_ms: int) -> float | None:
    """Busy slot-time over available slot-time (capacity x window), at most 1; None when the
    worker type has no capacity."""
    if capacity <= 0 or window_ms <= 0:
        return None
    return min(1.0, busy / (capacity * window_ms))


# -- forecast ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    """Stage arrivals per minute expected over the next horizon, and how it was made."""

    per_minute: float
    method: str  # "none", "recent mean", "exponential smoothing", "seasonal smoothing"
    history_minutes: int


def forecast_arrivals(per_minute: Sequence[float]) -> Forecast:
    """The next minutes' arrival rate from a series of per-minute counts (oldest first).

    Two days or more: Holt-Winters with a daily season on hourly sums; half an hour or more:
    simple exponential smoothing (statsmodels) on the minutes; less: the mean of the last
    ``RECENT_MINUTES``; none: 0.
    """
    n = len(per_minute)
    if n == 0:
        return Forecast(0.0, "none", 0)
    if n < MIN_SMOOTHING_MINUTES or not any(per_minute):
        recent = per_minute[-RECENT_MINUTES:]  # a load that is rising shows in its last minutes
        return Forecast(sum(recent) / len(recent), "recent mean", n)
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings():  # convergence chatter on short or flat series
        warnings.simplefilter("ignore")
        if n >= MIN_SEASONAL_MINUTES:
            usable = n - n % 60
            hours = [sum(per_minute[i : i + 60]) for i in range(n - usable, n, 60)]
            fit = ExponentialSmoothing(hours, trend=None, seasonal="add", seasonal_periods=24).fit()
            return Forecast(max(0.0, float(fit.forecast(1)[0]) / 60), "seasonal smoothing", n)
        fit = ExponentialSmoothing(list(per_minute), trend=None, seasonal=None).fit()
        return Forecast(max(0.0, float(fit.forecast(1)[0])), "exponential smoothing", n)


def per_minute_counts(times_ms: Iterable[int], *, now_ms: int, minutes: int) -> list[float]:
    """Counts per minute over the last ``minutes`` (oldest first), from event times; the
    series starts at the first minute that has an event (no history is no series)."""
    first = now_ms - minutes * 60_000
    counts = [0.0] * minutes
    seen = minutes
    for t in times_ms:
        if first <= t < now_ms:
            slot = (t - first) // 60_000
            counts[slot] += 1
            seen = min(seen, slot)
    return counts[seen:]


# -- desired capacity --------------------------------------------------------------------------


@dataclass(frozen=True)
class Demand:
    """What a worker type is asked to do: the forecast flow and the work waiting now."""

    arrivals_per_minute: float
    service_s: float  # mean predicted time of one of its stages
    backlog_stages: int = 0
    backlog_work_s: float = 0.0  # predicted seconds of the stages waiting now


@dataclass(frozen=True)
class Bounds:
    """resources.yaml's min and max for the worker type, and the most workers its quotas can
    feed (None: no quota limits it)."""

    minimum: int
    maximum: int
    quota_cap: int | None = None
    quota_reason: str = ""


@dataclass(frozen=True)
class Sizing:
    workers: int
    unbounded: int  # what the demand alone asks for
    reason: str


def quota_cap(
    service_s: float, rates_per_minute: Sequence[float], *, exhausted: bool = False
) -> int | None:
    """The most workers a worker type's rate-limited resources keep busy: each of its stages
    makes at least one call, so a rate of R calls/min sustains R/60 stages/s, i.e. R/60 x
    service time slots; beyond that extra workers only wait. An exhausted daily or monthly
    quota feeds none (until its window resets)."""
    if exhausted:
        return 0
    if not rates_per_minute:
        return None
    return max(1, math.ceil(min(rates_per_minute) / 60 * max(service_s, 0.001)))


def desired_workers(
    demand: Demand, bounds: Bounds, *, horizon_s: float, target: float = TARGET_UTILIZATION
) -> Sizing:
    """Workers for the next ``horizon_s``: the forecast flow at ``target`` utilization (Little's
    law: arrivals/s x service time = busy slots) plus the backlog drained within the horizon;
    then no more than the quotas can feed, and within [min, max]."""
    flow = demand.arrivals_per_minute / 60 * demand.service_s / target
    drain = demand.backlog_work_s / max(horizon_s, 1.0)
    wanted = math.ceil(round(flow + drain, 6))
    if demand.backlog_stages and not wanted:
        wanted = 1
    workers, reason = wanted, "forecast and backlog"
    if bounds.quota_cap is not None and workers > bounds.quota_cap:
        workers, reason = bounds.quota_cap, bounds.quota_reason or "quota"
    if workers > bounds.maximum:
        workers, reason = bounds.maximum, "max in resources.yaml"
    if workers < bounds.minimum:
        workers, reason = bounds.minimum, "min in resources.yaml"
    return Sizing(workers, wanted, reason)


# -- actuation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """The next pool size, and since when the desire has been below it (None: it is not)."""

    size: int
    low_since_ms: int | None


def next_size(
    current: int,
    desired: int,
    *,
    minimum: int,
    maximum: int,
    low_since_ms: int | None,
    now_ms: int,
    hold_ms: int,
) -> Step:
    """Grow at once; shrink only once the desire has stayed below the size for ``hold_ms``
    (hysteresis: a dip does not flap the pool); always within [minimum, maximum]."""
    desired = max(minimum, min(maximum, desired))
    current = max(minimum, min(maximum, current)) if current else desired
    if desired >= current:
        return Step(desired, None)
    since = now_ms if low_since_ms is None else low_since_ms
    if now_ms - since >= hold_ms:
        return Step(desired, None)
    return Step(current, since)

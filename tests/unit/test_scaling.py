"""The scaling arithmetic: busy windows, the arrival forecast, desired workers, hysteresis."""

from __future__ import annotations

import math

import pytest

from orchestrator.core import scaling
from orchestrator.core.resources import parse_resources
from orchestrator.core.scaling import Bounds, Demand, busy_ms, desired_workers, next_size
from orchestrator.errors import ValidationFailed

B = scaling.BUCKET_MS


@pytest.mark.parametrize(
    ("buckets", "live", "now", "window", "expected"),
    [
        ({}, [], 100 * B, 60_000, 0.0),
        # Buckets wholly inside the window count fully; older ones not at all.
        ({99: 5_000, 98: 10_000, 10: 10_000}, [], 100 * B, 60_000, 15_000.0),
        # The bucket cut by the window's start counts prorated (half of it inside).
        ({93: 10_000}, [], 99 * B + B // 2, 6 * B, 5_000.0),
        # The current bucket, partly elapsed, counts fully (its busy time is all before now).
        ({100: 3_000}, [], 100 * B + 5_000, 60_000, 3_000.0),
        # A slot held now counts from its start, or from the window's start if older.
        ({}, [100 * B - 20_000, 0], 100 * B, 60_000, 80_000.0),
    ],
)
def test_busy_time_of_a_window(
    buckets: dict[int, float], live: list[int], now: int, window: int, expected: float
) -> None:
    assert busy_ms(buckets, live, now_ms=now, window_ms=window) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("busy", "capacity", "window", "expected"),
    [(30_000, 1, 60_000, 0.5), (240_000, 4, 60_000, 1.0), (999_999, 1, 60_000, 1.0),
     (10, 0, 60_000, None)],
)  # fmt: skip
def test_utilization_is_busy_over_available(
    busy: float, capacity: int, window: int, expected: float | None
) -> None:
    assert scaling.utilization(busy, capacity, window) == expected


def test_forecast_without_history_is_zero() -> None:
    assert scaling.forecast_arrivals([]) == scaling.Forecast(0.0, "none", 0)


def test_short_history_is_its_mean() -> None:
    forecast = scaling.forecast_arrivals([2, 4, 6])
    assert (forecast.per_minute, forecast.method) == (4.0, "recent mean")


def test_a_rising_load_shows_in_the_recent_mean() -> None:
    forecast = scaling.forecast_arrivals([0, 0, 0, 0, 0, 0, 10, 20, 30, 40, 50])
    assert forecast.per_minute == 30.0  # the last five minutes, not the eleven


def test_exponential_smoothing_follows_a_level_shift() -> None:
    series = [2.0] * 40 + [10.0] * 20
    forecast = scaling.forecast_arrivals(series)
    assert forecast.method == "exponential smoothing"
    assert 8.0 < forecast.per_minute <= 10.5


def test_daily_season_is_fitted_with_two_days_of_history() -> None:
    # Busy hours 9-17 (30 arrivals/min), quiet otherwise (3/min), for three days; the series
    # ends at 09:00, so the next hour is a busy one.
    day = [30.0 if 9 <= minute // 60 < 17 else 3.0 for minute in range(1440)]
    series = day * 3 + day[: 9 * 60]
    forecast = scaling.forecast_arrivals(series)
    assert forecast.method == "seasonal smoothing"
    assert forecast.per_minute > 20


def test_per_minute_counts_start_at_the_first_event() -> None:
    now = 10 * 60_000
    times = [now - 3 * 60_000 + 1, now - 3 * 60_000 + 2, now - 1, now + 5, 0]
    assert scaling.per_minute_counts(times, now_ms=now, minutes=5) == [2.0, 0.0, 1.0]
    assert scaling.per_minute_counts([], now_ms=now, minutes=5) == []


@pytest.mark.parametrize(
    ("demand", "bounds", "workers", "reason"),
    [
        # 60 stages/min of 2 s at 80 %: 2.5 busy slots -> 3.
        (Demand(60, 2.0), Bounds(1, 10), 3, "forecast and backlog"),
        # The backlog drains within the horizon: 600 s of work in 300 s -> 2 more.
        (Demand(60, 2.0, 100, 600.0), Bounds(1, 10), 5, "forecast and backlog"),
        # Nothing to do: the floor.
        (Demand(0, 2.0), Bounds(2, 10), 2, "min in resources.yaml"),
        # One waiting stage is worth one worker even if tiny.
        (Demand(0, 0.01, 1, 0.01), Bounds(0, 10), 1, "forecast and backlog"),
        (Demand(600, 2.0), Bounds(1, 8), 8, "max in resources.yaml"),
        # The rate starves extra workers: capped, though never under the minimum.
        (Demand(600, 2.0), Bounds(1, 50, 2, "rate"), 2, "rate"),
        (Demand(600, 2.0), Bounds(3, 50, 0, "quota used up"), 3, "min in resources.yaml"),
    ],
)
def test_desired_workers(demand: Demand, bounds: Bounds, workers: int, reason: str) -> None:
    sizing = desired_workers(demand, bounds, horizon_s=300)
    assert (sizing.workers, sizing.reason) == (workers, reason)
    assert bounds.minimum <= sizing.workers <= bounds.maximum


@pytest.mark.parametrize(
    ("service", "rates", "exhausted", "cap"),
    [(2.0, [], False, None), (2.0, [60.0], False, 2), (2.0, [600.0, 60.0], False, 2),
     (0.1, [6.0], False, 1), (30.0, [60.0], False, 30), (2.0, [60.0], True, 0)],
)  # fmt: skip
def test_quota_cap(service: float, rates: list[float], exhausted: bool, cap: int | None) -> None:
    assert scaling.quota_cap(service, rates, exhausted=exhausted) == cap


def test_hysteresis_grows_at_once_and_shrinks_after_the_hold() -> None:
    step = next_size(2, 5, minimum=1, maximum=4, low_since_ms=None, now_ms=0, hold_ms=60_000)
    assert step == scaling.Step(4, None)  # grows at once, never above max
    step = next_size(4, 1, minimum=1, maximum=4, low_since_ms=None, now_ms=0, hold_ms=60_000)
    assert step == scaling.Step(4, 0)  # a dip: hold
    step = next_size(4, 3, minimum=1, maximum=4, low_since_ms=0, now_ms=30_000, hold_ms=60_000)
    assert step == scaling.Step(4, 0)
    step = next_size(4, 4, minimum=1, maximum=4, low_since_ms=0, now_ms=40_000, hold_ms=60_000)
    assert step == scaling.Step(4, None)  # the dip ended: the clock restarts
    step = next_size(4, 0, minimum=2, maximum=4, low_since_ms=0, now_ms=60_000, hold_ms=60_000)
    assert step == scaling.Step(2, None)  # held long enough: down, never below min


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("workers: {min_workers: {a: -1}}", "workers.min_workers.a: Input should be greater"),
        ("workers: {max_workers: {a: 1000000}}", "workers.max_workers.a: Input should be less"),
        ("workers: {min_workers: {a: 5}, max_workers: {a: 2}}", "min_workers of a (5) exceeds"),
        ("workers: {min_workers: {a: 9}, max_concurrent: {a: 4}}", "min_workers of a (9)"),
    ],
)
def test_absurd_bounds_are_a_one_line_config_error(text: str, problem: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_resources(text)
    assert problem in caught.value.message and "\n" not in caught.value.message


def test_bounds_default_to_one_and_the_slots() -> None:
    workers = parse_resources("workers: {max_concurrent: {a: 6, z: 0}}").workers
    assert workers.bounds_for("a") == (1, 6)
    assert workers.bounds_for("z") == (0, 0)
    assert math.isfinite(workers.bounds_for("other")[1])

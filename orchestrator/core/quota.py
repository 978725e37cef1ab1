"""Quota windows and rate arithmetic, the same rules the Lua scripts apply in Redis.

Calendar windows are UTC: a day is ``epoch_ms // 86_400_000``; a month is ``year * 12 +
month - 1``, from Howard Hinnant's ``civil_from_days``. Rates use GCRA: one timestamp per
resource (its theoretical arrival time), so a per-minute limit costs one key, not a log.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field

from orchestrator.core.templates import BoundStage

DAY_MS = 86_400_000
MINUTE_MS = 60_000


def day_window(now_ms: int) -> int:
    return now_ms // DAY_MS


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day number counted from 1970-01-01."""
    z = days + 719_468
    era = (z if z >= 0 else z - 146_096) // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def month_window(now_ms: int) -> int:
    year, month, _ = civil_from_days(day_window(now_ms))
    return year * 12 + month - 1


def days_from_civil(year: int, month: int, day: int) -> int:
    y = year - 1 if month <= 2 else year
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = month - 3 if month > 2 else month + 9
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def ms_until_next_day(now_ms: int) -> int:
    return (day_window(now_ms) + 1) * DAY_MS - now_ms


def ms_until_next_month(now_ms: int) -> int:
    year, month, _ = civil_from_days(day_window(now_ms))
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return days_from_civil(year, month, 1) * DAY_MS - now_ms


@dataclass(frozen=True)
class Gcra:
    """Generic cell rate algorithm for ``rate`` events per minute, bursting up to ``rate``."""

    rate_per_minute: float

    @property
    def interval_ms(self) -> float:
        return MINUTE_MS / self.rate_per_minute

    def attempt(self, tat_ms: float | None, now_ms: float, units: float = 1) -> tuple[float, float]:
        """(new theoretical arrival time, ms to wait); a wait of 0 means allowed now."""
        tat = max(tat_ms or now_ms, now_ms)
        new_tat = tat + units * self.interval_ms
        wait = new_tat - now_ms - MINUTE_MS
        if wait > 0:
            return tat, wait
        return new_tat, 0.0


@dataclass(frozen=True)
class Shortfall:
    resource: str
    window: str  # "day" or "month"
    needed: float
    available: float
    limit: float
    never_fits: bool
    retry_after_ms: int


def shortfalls(
    needs: Mapping[str, float],
    committed: Mapping[tuple[str, str], float],
    limits: Mapping[str, tuple[float | None, float | None]],
    now_ms: int,
) -> list[Shortfall]:
    """Why ``needs`` does not fit: per resource and window, with when it could."""
    found = []
    for resource, needed in sorted(needs.items()):
        daily, monthly = limits.get(resource, (None, None))
        for window, limit, reset in (
            ("day", daily, ms_until_next_day(now_ms)),
            ("month", monthly, ms_until_next_month(now_ms)),
        ):
            if limit is None:
                continue
            available = limit - committed.get((resource, window), 0.0)
            if needed > available + 1e-9:
                found.append(
                    Shortfall(
                        resource, window, needed, max(0.0, available), limit, needed > limit, reset
                    )
                )
    return found


def refund(reserved: float, actual: float) -> float:
    """Units given back when a stage used less than it reserved (negative: an overage)."""
    return reserved - actual


@dataclass(frozen=True)
class RunNeeds:
    """What a whole run needs: resource units in total, and stages per worker type."""

    quotas: dict[str, float] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)


def run_needs(stages: Sequence[BoundStage], unusable: Set[str] = frozenset()) -> RunNeeds:
    """What a whole run reserves: the sum of its stages' resources (but those it cannot use:
    an LLM's tokens without an LLM), its worker types."""
    quotas: dict[str, float] = defaultdict(float)
    for stage in stages:
        for resource, quantity in stage.resources.items():
            if resource not in unusable:
                quotas[resource] += quantity
    return RunNeeds(quotas=dict(quotas), workers=dict(Counter(s.worker for s in stages)))

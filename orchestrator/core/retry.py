"""Retry arithmetic: which failures are worth another attempt, and after how long.

Pure, like dramatiq's ``compute_backoff``: the stage runner decides with these and Celery
only carries out the countdown.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from orchestrator.errors import StageFailed, TransientStageError

#: Exceptions from the standard library that mean "the network or a peer hiccupped".
TRANSIENT_BUILTINS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    """A stage's retry policy as the template states it."""

    max_attempts: int = 3
    backoff_s: float = 1.0
    factor: float = 2.0
    max_backoff_s: float = 60.0
    jitter: bool = True


def compute_backoff(
    policy: RetryPolicy,
    attempt: int,
    *,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (attempts count from 1).

    Exponential with "full jitter" (a uniform draw up to the exponential bound), so that many
    stages failing together do not come back together; a provider's ``Retry-After`` is a floor.
    """
    bound = min(policy.max_backoff_s, policy.backoff_s * policy.factor ** max(0, attempt - 1))
    delay = (rng or random).uniform(bound / 2, bound) if policy.jitter else bound
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return round(delay, 3)


def is_transient(error: BaseException) -> bool:
    """True for failures another attempt may cure: network, timeouts, 429 and 5xx."""
    if isinstance(error, StageFailed):
        return error.transient
    if isinstance(error, TRANSIENT_BUILTINS):
        return True
    # Client libraries (httpx, urllib3, redis, minio) raise their own connection and timeout
    # errors; their class names say so and keep this module free of imports from them.
    name = type(error).__name__
    return any(
        word in name
        for word in (
            "Timeout",
            "ConnectError",
            "ConnectionError",
            "Unavailable",
            "ProtocolError",
            "RemoteProtocol",
        )
    )


def should_retry(policy: RetryPolicy, attempt: int, error: BaseException) -> bool:
    """Retry transient failures while attempts remain; permanent ones fail at once."""
    return attempt < policy.max_attempts and is_transient(error)


def retry_after_of(error: BaseException) -> float | None:
    """The provider's Retry-After carried by a transient stage error, if any."""
    return error.retry_after_s if isinstance(error, TransientStageError) else None

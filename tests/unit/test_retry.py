"""Retry arithmetic: backoff bounds, jitter, Retry-After, transient versus permanent."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.retry import (
    RetryPolicy,
    compute_backoff,
    is_transient,
    retry_after_of,
    should_retry,
)
from orchestrator.errors import StageFailed, TransientStageError, ValidationFailed

EXACT = RetryPolicy(max_attempts=5, backoff_s=1.0, factor=2.0, max_backoff_s=10.0, jitter=False)


@pytest.mark.parametrize(("attempt", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0)])
def test_backoff_doubles_up_to_the_cap(attempt: int, delay: float) -> None:
    assert compute_backoff(EXACT, attempt) == delay


def test_retry_after_is_a_floor() -> None:
    assert compute_backoff(EXACT, 1, retry_after_s=7.5) == 7.5
    assert compute_backoff(EXACT, 4, retry_after_s=0.5) == 8.0


@given(attempt=st.integers(1, 30), seed=st.integers(0, 2**32))
def test_jitter_stays_within_half_and_full_bound(attempt: int, seed: int) -> None:
    policy = RetryPolicy(backoff_s=0.5, factor=3.0, max_backoff_s=30.0)
    bound = min(30.0, 0.5 * 3.0 ** (attempt - 1))
    delay = compute_backoff(policy, attempt, rng=random.Random(seed))
    assert bound / 2 - 0.001 <= delay <= bound + 0.001


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (TransientStageError("429 from provider"), True),
        (ConnectionResetError("peer reset"), True),
        (TimeoutError("read timed out"), True),
        (type("ConnectTimeout", (Exception,), {})("httpx"), True),
        (StageFailed("bad input"), False),
        (ValidationFailed("missing topic"), False),
        (ValueError("bug"), False),
        (KeyError("bug"), False),
    ],
)
def test_transient_classification(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_should_retry_respects_attempts_and_kind() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert should_retry(policy, 1, TimeoutError())
    assert should_retry(policy, 2, TimeoutError())
    assert not should_retry(policy, 3, TimeoutError())
    assert not should_retry(policy, 1, StageFailed("permanent"))


def test_retry_after_of() -> None:
    assert retry_after_of(TransientStageError("x", retry_after_s=3.0)) == 3.0
    assert retry_after_of(TimeoutError()) is None

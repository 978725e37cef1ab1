"""The waiting queue on a real Redis: runs go by priority and age, a run that cannot delay a
blocked head goes ahead of it (backfilling), and a quota's reset at midnight UTC admits the
runs that waited for it."""

from __future__ import annotations

import time

import redis

from orchestrator.constants import Priority
from orchestrator.core.resources import parse_resources
from orchestrator.engine.admission import ADMITTED_KEY, STATE, Admission, RunNeeds

POOL = """
resources:
  tokens: {daily_limit: 500}
  mail: {daily_limit: 10}
  big: {daily_limit: 1000}
"""


def admission(client: redis.Redis, extra: str = "") -> Admission:
    return Admission(client, parse_resources(POOL + extra), lease_ttl_s=600)


def queue(adm: Admission, run: str, needs: dict[str, float], priority: Priority) -> None:
    """Reserve ``needs`` for a run that must wait; a millisecond apart from the next, since
    runs of one priority arriving in the same millisecond are ordered by their ids."""
    assert adm.reserve(run, RunNeeds(needs), priority).status == "waiting"
    time.sleep(0.002)


def waiting(client: redis.Redis, adm: Admission) -> list[str]:
    return [run.decode() for run in client.zrange(adm.prefix + "pending", 0, -1)]


def noted(client: redis.Redis, adm: Admission, run: str) -> bool:
    """Admitted and noted for its launch, as every path that admits a run must."""
    return client.zscore(adm.prefix + ADMITTED_KEY, run) is not None


def test_a_small_run_that_needs_nothing_the_head_lacks_goes_ahead(
    redis_client: redis.Redis,
) -> None:
    adm = admission(redis_client)
    assert adm.reserve("holder", RunNeeds({"tokens": 400}), Priority.NORMAL).status == "admitted"
    assert adm.reserve("mailer", RunNeeds({"mail": 10}), Priority.NORMAL).status == "admitted"
    queue(adm, "head", {"tokens": 300}, Priority.HIGH)
    # Short of mail itself: it waits, behind the head.
    queue(adm, "small", {"mail": 2}, Priority.LOW)
    assert waiting(redis_client, adm) == ["head", "small"]
    # Mail comes back; the head still lacks tokens, and the small run takes none of them.
    assert adm.release("mailer") == ["small"]
    assert noted(redis_client, adm, "small")
    assert waiting(redis_client, adm) == ["head"]
    # A run arriving that fits and cannot delay the head goes at once.
    assert adm.reserve("arrival", RunNeeds({"mail": 1}), Priority.LOW).status == "admitted"
    assert noted(redis_client, adm, "arrival")
    assert adm.release("holder") == ["head"]


def test_a_run_that_needs_what_the_head_lacks_waits_behind_it(redis_client: redis.Redis) -> None:
    adm = admission(redis_client)
    assert adm.reserve("holder", RunNeeds({"tokens": 400}), Priority.NORMAL).status == "admitted"
    queue(adm, "head", {"tokens": 300}, Priority.NORMAL)
    # 50 tokens are free and would fit, but the head is short of tokens: they are its.
    decision = adm.reserve("small", RunNeeds({"tokens": 50, "mail": 1}), Priority.LOW)
    assert decision.status == "waiting"
    assert waiting(redis_client, adm) == ["head", "small"]
    assert adm.admit_pending() == []
    assert adm.release("holder") == ["head", "small"]


def test_a_run_ahead_keeps_what_it_wants_of_what_it_is_not_short_of(
    redis_client: redis.Redis,
) -> None:
    adm = admission(redis_client)
    assert adm.reserve("holder", RunNeeds({"tokens": 400}), Priority.NORMAL).status == "admitted"
    head = RunNeeds({"tokens": 300, "big": 600})
    queue(adm, "head", head.quotas, Priority.NORMAL)
    # Big is free, and the head is short of tokens only: 400 of big leave it its 600.
    assert adm.reserve("modest", RunNeeds({"big": 400}), Priority.NORMAL).status == "admitted"
    # 500 more would leave the head nothing of it: that would delay the head.
    queue(adm, "greedy", {"big": 500}, Priority.NORMAL)
    assert adm.release("holder") == ["head"]
    assert waiting(redis_client, adm) == ["greedy"]


def test_backfilling_looks_only_so_far_past_the_head(redis_client: redis.Redis) -> None:
    adm = admission(redis_client, "admission: {backfill_depth: 2}\n")
    assert adm.reserve("holder", RunNeeds({"tokens": 500}), Priority.NORMAL).status == "admitted"
    assert adm.reserve("mailer", RunNeeds({"mail": 10}), Priority.NORMAL).status == "admitted"
    for run in ("head", "second", "third"):
        queue(adm, run, {"tokens": 100}, Priority.NORMAL)
    queue(adm, "far", {"mail": 1}, Priority.NORMAL)
    queue(adm, "near", {"mail": 1}, Priority.HIGH)
    assert waiting(redis_client, adm) == ["near", "head", "second", "third", "far"]
    # "near" is first in line; "far" would fit too, but lies three runs past the blocked head.
    assert adm.release("mailer") == ["near"]
    # A run that needs no unit of anything delays nobody, however far back it would queue.
    assert adm.reserve("free", RunNeeds({}), Priority.LOW).status == "admitted"
    strict = admission(redis_client, "admission: {backfill_depth: 0}\n")
    queue(strict, "one", {"mail": 1}, Priority.LOW)
    assert strict.admit_pending() == []


def test_strict_priority_among_fresh_runs_with_backfilling(redis_client: redis.Redis) -> None:
    adm = admission(redis_client)
    assert adm.reserve("holder", RunNeeds({"tokens": 500}), Priority.NORMAL).status == "admitted"
    for run, priority in [
        ("low", Priority.LOW),
        ("normal-1", Priority.NORMAL),
        ("high", Priority.HIGH),
        ("normal-2", Priority.NORMAL),
    ]:
        queue(adm, run, {"tokens": 200}, priority)
    assert adm.release("holder") == ["high", "normal-1"]
    assert adm.release("high") == ["normal-2"]  # low needs the tokens normal-2 lacked
    assert adm.release("normal-1") == ["low"]


def test_an_old_low_run_goes_before_a_new_high_one(redis_client: redis.Redis) -> None:
    adm = admission(redis_client, "admission: {aging_period_s: 1}\n")
    whole = RunNeeds({"tokens": 500})
    assert adm.reserve("holder", whole, Priority.NORMAL).status == "admitted"
    queue(adm, "old-low", whole.quotas, Priority.LOW)
    time.sleep(2.2)  # two aging periods and more: low has climbed to above high
    queue(adm, "new-high", whole.quotas, Priority.HIGH)
    queue(adm, "new-normal", whole.quotas, Priority.NORMAL)
    assert waiting(redis_client, adm) == ["old-low", "new-high", "new-normal"]
    assert adm.release("holder") == ["old-low"]
    assert adm.release("old-low") == ["new-high"]


def test_a_queue_scored_before_aging_is_rescored(redis_client: redis.Redis) -> None:
    adm = admission(redis_client)
    assert adm.reserve("holder", RunNeeds({"tokens": 500}), Priority.NORMAL).status == "admitted"
    queue(adm, "new", {"tokens": 500}, Priority.NORMAL)
    arrived = int(redis_client.zscore(adm.prefix + "pending", "new") or 0) - 300_000 - 1000
    # Queued by the old script a second before "new": band 1 * 10**13 + arrival.
    redis_client.zadd(adm.prefix + "pending", {"old": 10**13 + arrived})
    redis_client.hset(adm.prefix + "pending:needs", "old", '{"tokens": 500}')
    assert adm.admit_pending() == []
    assert redis_client.zscore(adm.prefix + "pending", "old") == arrived + 300_000
    assert adm.release("holder") == ["old"]


def test_a_quota_reset_at_midnight_admits_the_runs_waiting_for_it(
    redis_client: redis.Redis,
) -> None:
    adm = admission(redis_client)
    assert adm.reserve("spender", RunNeeds({"tokens": 500}), Priority.NORMAL).status == "admitted"
    assert adm.settle("spender", "s", "tokens", 500, 480) == 20
    adm.release("spender")
    for run in ("a", "b", "c"):
        decision = adm.reserve(run, RunNeeds({"tokens": 200}), Priority.NORMAL)
        assert decision.status == "waiting"
    assert decision.retry_after_s and decision.retry_after_s <= 86400  # at midnight UTC
    assert adm.admit_pending() == []
    # Midnight UTC passes: the day's counter is now yesterday's (the scripts read Redis' clock).
    key = adm.prefix + "q"
    d, *rest = STATE.unpack(redis_client.hget(key, "tokens") or b"")
    redis_client.hset(key, "tokens", STATE.pack(d - 1, *rest))
    # The reconciler's pass (or any release) admits what fits in the new day, in order.
    assert adm.admit_pending() == ["a", "b"]
    assert all(noted(redis_client, adm, run) for run in ("a", "b"))
    tokens = adm.snapshot()["resources"]["tokens"]
    assert (tokens["used_today"], tokens["reserved"]) == (0, 400)
    assert waiting(redis_client, adm) == ["c"]

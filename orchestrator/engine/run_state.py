"""The live state of running executions in Redis: plan, stage records, packets, events.

Stages write here on their hot path (one pipelined round trip at start and one at end); the
coordinator copies it into the database when the run finishes and the reconciler does so
periodically, so the database is the durable record and Redis the fast one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypedDict, cast

import redis

from orchestrator.constants import STAGE_ENDED, redis_key
from orchestrator.engine.events import STREAM_TTL_S, Event, append, append_unless_finishing

RUN_TTL_S = STREAM_TTL_S
PARTS = ("", "plan", "stages", "packets", "ended")


class RunMeta(TypedDict, total=False):
    """A run's live meta (``run:<id>`` hash, each value JSON)."""

    launch: str | None  # this launch's token: messages of another launch are stale
    status: str  # a LiveStatus
    error: str
    started_ms: int
    estimated_time_ms: int | None
    priority: str
    client_id: str | None
    deps: dict[str, list[str]]  # stage -> the stages of this launch it waits for
    stage_p50: dict[str, float]  # predicted median time per stage, for the ETA
    finishing: str  # set once: the run's finish has begun
    _ended: set[str]  # added by stage_inputs
    _started_at: dict[str, int]  # filled by the stage runner


class StageRecord(TypedDict, total=False):
    """A stage's live record (``run:<id>:stages`` hash): what the database row becomes."""

    worker: str
    action: str
    order: int
    attempts: int
    task_id: str | None
    status: str  # a StageStatus
    started_at: int | None
    completed_at: int
    retry_at: int  # when a waiting or retrying stage is due back
    time_ms: int
    cost_usd: float
    usage: dict[str, float]
    cache_hit: bool
    error: str | None
    reason: str
    proceed: bool
    timing: dict[str, float]  # ms per step of the last attempt: inputs, slot, read, ...


class StageInputs(NamedTuple):
    """What a stage reads before it runs (``spec`` is None when the run has no live plan)."""

    spec: dict[str, Any] | None
    meta: RunMeta
    packets: dict[str, dict[str, Any]]
    record: StageRecord
    extra: list[Any]


class LiveRun(NamedTuple):
    """What a run's finish closes: its live meta, stage records and packets."""

    meta: RunMeta
    records: dict[str, StageRecord]
    packets: dict[str, dict[str, Any]]


def _decoded(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """A hash of JSON values, decoded."""
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def _run(execution_id: str, part: str = "") -> str:
    return redis_key("run", execution_id, part) if part else redis_key("run", execution_id)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def now_ms() -> int:
    return int(time.time() * 1000)


class RunState:
    """Reads and writes one execution's live state; every write also appends its event."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def create(
        self,
        execution_id: str,
        meta: RunMeta,
        plan: dict[str, dict[str, Any]],
        packets: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Store a fresh live state: meta, the plan, and the packets of checkpoints a resumed
        run starts from. Whatever an earlier attempt left is cleared."""
        pipe = self.redis.pipeline(transaction=True)
        for part in PARTS:
            pipe.delete(_run(execution_id, part))
        pipe.hset(_run(execution_id), mapping={k: json.dumps(v) for k, v in meta.items()})
        pipe.hset(_run(execution_id, "plan"), mapping={k: json.dumps(v) for k, v in plan.items()})
        if packets:
            pipe.hset(
                _run(execution_id, "packets"),
                mapping={k: json.dumps(v) for k, v in packets.items()},
            )
        for part in ("", "plan", "stages", "packets"):
            pipe.expire(_run(execution_id, part), RUN_TTL_S)
        pipe.execute()

    def drop(self, execution_id: str) -> None:
        """Remove a live state that no stage will ever read (its launch was called off)."""
        self.redis.delete(*(_run(execution_id, part) for part in PARTS))

    def exists(self, execution_id: str) -> bool:
        return bool(self.redis.exists(_run(execution_id, "plan")))

    def meta(self, execution_id: str) -> RunMeta:
        return cast(RunMeta, self._json_hash(_run(execution_id)))

    def set_meta(self, execution_id: str, **fields: Any) -> None:
        self.redis.hset(_run(execution_id), mapping={k: json.dumps(v) for k, v in fields.items()})

    def stage_inputs(
        self,
        execution_id: str,
        stage_id: str,
        deps: list[str],
        also: Callable[[Any], object] | None = None,
    ) -> StageInputs:
        """The stage's spec, the run's meta, its dependencies' packets and its own record,
        in one round trip (the message names the dependencies). ``also`` queues more commands
        on the same pipeline (the stage's slot request); their replies come back in ``extra``.
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(_run(execution_id, "plan"), stage_id)
        pipe.hgetall(_run(execution_id))
        pipe.hget(_run(execution_id, "stages"), stage_id)
        pipe.smembers(_run(execution_id, "ended"))
        if deps:
            pipe.hmget(_run(execution_id, "packets"), deps)
        else:
            pipe.echo(b"")  # keeps the replies' positions fixed
        if also is not None:
            also(pipe)
        spec_raw, meta_raw, record_raw, ended, values, *extra = pipe.execute()
        if spec_raw is None:
            return StageInputs(None, {}, {}, {}, extra)
        meta = cast(RunMeta, {k.decode(): json.loads(v) for k, v in meta_raw.items()})
        meta["_ended"] = {s.decode() for s in ended}
        packets = (
            {d: json.loads(v) for d, v in zip(deps, values, strict=False) if v is not None}
            if deps
            else {}
        )
        record = cast(StageRecord, json.loads(record_raw) if record_raw else {})
        return StageInputs(json.loads(spec_raw), meta, packets, record, extra)

    def record(
        self,
        execution_id: str,
        stage_id: str,
        record: StageRecord,
        *,
        event: Event | None = None,
        packet: dict[str, Any] | None = None,
        pipe: Any = None,
        earlier: Event | None = None,
    ) -> None:
        """Write a stage's record (and packet), and append its event, in one round trip.

        Given a ``pipe``, the commands join it and the caller executes it. ``earlier``: an
        event of the stage's that goes out just before ``event`` (its deferred start).
        """
        own = pipe is None
        pipe = self.redis.pipeline(transaction=False) if own else pipe
        pipe.hset(_run(execution_id, "stages"), stage_id, json.dumps(record, default=str))
        if record.get("status") in STAGE_ENDED:
            pipe.sadd(_run(execution_id, "ended"), stage_id)
            pipe.expire(_run(execution_id, "ended"), RUN_TTL_S)
        if packet is not None:
            pipe.hset(_run(execution_id, "packets"), stage_id, json.dumps(packet))
        append_unless_finishing(pipe, execution_id, *(e for e in (earlier, event) if e is not None))
        if own:
            pipe.execute()

    def publish(
        self,
        execution_id: str,
        event: Event,
        *,
        by_stage: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Append ``event`` now; ``by_stage``: only while the run's finish has not begun;
        ``meta``: fields of the run's meta set in the same round trip, just before."""
        pipe = self.redis.pipeline(transaction=False)
        if meta:
            pipe.hset(_run(execution_id), mapping={k: json.dumps(v) for k, v in meta.items()})
        (append_unless_finishing if by_stage else append)(pipe, execution_id, event)
        pipe.execute()

    def stages(self, execution_id: str) -> dict[str, StageRecord]:
        return self._json_hash(_run(execution_id, "stages"))

    def packets(self, execution_id: str) -> dict[str, dict[str, Any]]:
        return self._json_hash(_run(execution_id, "packets"))

    def plan(self, execution_id: str) -> dict[str, dict[str, Any]]:
        return self._json_hash(_run(execution_id, "plan"))

    def _json_hash(self, key: str) -> dict[str, Any]:
        return _decoded(self.redis.hgetall(key))  # type: ignore[arg-type]

    def begin_finish(self, execution_id: str, launch: str | None) -> LiveRun | None:
        """Claim the run's finish and read what it closes: meta, records, packets (two round
        trips). None if the claim is not this caller's: ``launch`` (a canvas's own token)
        is not the live one, or another caller claimed it first. A run without a live state
        is closed from whatever records are left, with no claim to take."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(_run(execution_id), "launch")
        pipe.exists(_run(execution_id, "plan"))
        current, live = pipe.execute()
        if launch is not None and (current is None or json.loads(current) != launch):
            return None
        pipe = self.redis.pipeline(transaction=True)  # the reads see the state after the claim
        if live:
            pipe.hsetnx(_run(execution_id), "finishing", "1")
        for part in ("", "stages", "packets"):
            pipe.hgetall(_run(execution_id, part))
        *claimed, meta, records, packets = pipe.execute()
        if claimed and not claimed[0]:
            return None
        return LiveRun(
            cast(RunMeta, _decoded(meta) if live else {}), _decoded(records), _decoded(packets)
        )

    def claim_finish(self, execution_id: str) -> bool:
        """True for exactly one caller: the one that gets to finish the run."""
        return bool(self.redis.hsetnx(_run(execution_id), "finishing", "1"))

    def drop_finish_claim(self, execution_id: str) -> None:
        """Let the run be finished again: its finisher died before it was done."""
        self.redis.hdel(_run(execution_id), "finishing")

"""Progress events: one Redis stream per execution, written by stages, read by SSE clients.

A stream (not pub/sub) so that a client reconnecting with ``Last-Event-ID`` gets exactly
what it missed: the entry id *is* the SSE event id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Final, Literal, TypedDict

import redis

from orchestrator.constants import redis_key

#: Streams keep this many events at most (approximate trim) and live this long after the last.
STREAM_MAXLEN = 10_000
STREAM_TTL_S = 7 * 24 * 3600

#: ``type`` of the last event of a run; its ``status`` is the terminal status.
FINAL: Final = "final"


class Event(TypedDict, total=False):
    """One update of a run, as SSE subscribers receive it (``data:`` of each event)."""

    type: Literal["execution", "stage", "progress", "final"]
    stage: str | None
    status: str
    progress: float
    message: str
    estimated_remaining_ms: int | None
    total_cost_usd: float
    total_time_ms: int | None


def execution_event(status: str, message: str, remaining_ms: int | None) -> Event:
    """The run as a whole moved: waiting, started, recovering, resumed."""
    return Event(
        type="execution",
        stage=None,
        status=status,
        progress=0.0,
        message=message,
        estimated_remaining_ms=remaining_ms,
    )


def stage_event(
    stage: str, status: str, message: str, progress: float, remaining_ms: int | None
) -> Event:
    """A stage changed status."""
    return Event(
        type="stage",
        stage=stage,
        status=status,
        progress=progress,
        message=message,
        estimated_remaining_ms=remaining_ms,
    )


def progress_event(stage: str, progress: float, message: str, remaining_ms: int | None) -> Event:
    """What a running stage reported of itself (``ctx.progress``)."""
    return Event(
        type="progress",
        stage=stage,
        progress=round(progress, 1),
        message=message,
        estimated_remaining_ms=remaining_ms,
    )


def final_event(
    status: str, message: str, total_cost_usd: float, total_time_ms: int | None
) -> Event:
    """The last event of a run: its terminal status, cost and time."""
    return Event(
        type=FINAL,
        stage=None,
        status=status,
        progress=100.0,
        message=message,
        estimated_remaining_ms=0,
        total_cost_usd=total_cost_usd,
        total_time_ms=total_time_ms,
    )


def stream_key(execution_id: str) -> str:
    return redis_key("events", execution_id)


def append(pipe: Any, execution_id: str, event: Event) -> None:
    """Queue ``event`` on a pipeline (the caller executes it with what else it writes)."""
    key = stream_key(execution_id)
    pipe.xadd(key, {"data": json.dumps(event, default=str)}, maxlen=STREAM_MAXLEN, approximate=True)
    pipe.expire(key, STREAM_TTL_S)


#: A stage's events, appended only while its run's finish has not begun (``finishing`` in the
#: run's meta): once the final event is out, a stage that outlived a cancel adds nothing after
#: it. All in one script, so a subscriber blocked on the stream is woken once for all of them.
#: KEYS = run meta, stream; ARGV = max length, TTL, then each event's JSON.
_UNLESS_FINISHING = """
if redis.call('HEXISTS', KEYS[1], 'finishing') == 1 then return false end
for i = 3, #ARGV do
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[i])
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return true
"""


def append_unless_finishing(pipe: Any, execution_id: str, *events: Event) -> None:
    """``append`` for a stage's events: dropped if the run's finish has begun."""
    if not events:
        return
    meta = redis_key("run", execution_id)
    pipe.eval(
        _UNLESS_FINISHING,
        2,
        meta,
        stream_key(execution_id),
        STREAM_MAXLEN,
        STREAM_TTL_S,
        *(json.dumps(event, default=str) for event in events),
    )


def publish(client: redis.Redis, execution_id: str, event: Event) -> str:
    """Append ``event`` now; returns its stream id (= its SSE id)."""
    pipe = client.pipeline(transaction=False)
    append(pipe, execution_id, event)
    entry_id, _ = pipe.execute()
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def read(
    client: redis.Redis, execution_id: str, *, after: str = "0-0", count: int = 1000
) -> list[tuple[str, dict[str, Any]]]:
    """Events after id ``after`` (exclusive), oldest first, without blocking."""
    entries: Any = client.xrange(
        stream_key(execution_id), min=f"({after}" if after != "0-0" else "-", count=count
    )
    return [
        (
            entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
            json.loads(fields[b"data"] if b"data" in fields else fields["data"]),
        )
        for entry_id, fields in entries
    ]


def follow(
    client: redis.Redis,
    execution_id: str,
    *,
    after: str = "0-0",
    timeout_s: float | None = None,
    block_ms: int = 2000,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every event of the run from ``after`` on, blocking for new ones, until the final one.

    Raises ``TimeoutError`` if ``timeout_s`` passes first. XREAD BLOCK wakes on each new
    entry: no polling interval to tune. ``block_ms`` stays under redis-py's default socket
    timeout (5 s), or an idle run would read as a dead connection.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    key = stream_key(execution_id)
    while True:
        wait = block_ms
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no final event for {execution_id} in {timeout_s} s")
            wait = max(1, min(block_ms, int(left * 1000)))
        response: Any = client.xread({key: after}, block=wait, count=500)
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                after = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                event = json.loads(fields[b"data"] if b"data" in fields else fields["data"])
                yield after, event
                if event.get("type") == FINAL:
                    return

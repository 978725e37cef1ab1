"""One Redis reader per API process fans each run's events out to every SSE subscriber.

Subscribers never touch Redis: they register a cursor (their ``Last-Event-ID``) and get a
queue of ready-made SSE frames (each event is rendered once, whatever the number of
readers). The hub's single loop XREADs every watched stream from the lowest cursor it needs,
so a reconnecting client is replayed what it missed by the same read that serves the rest.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis

from orchestrator.constants import REDIS_PREFIX
from orchestrator.engine.events import FINAL, stream_key

log = logging.getLogger(__name__)

#: How long one XREAD blocks when nothing happens (under redis-py's 5 s socket timeout). A new
#: subscriber does not wait for it: it wakes the read through the hub's wake-up stream.
BLOCK_MS = 2000
#: Entries a new subscriber is handed at once; the hub's reads bring the rest.
REPLAY_COUNT = 1000
#: The hub's connection name in CLIENT LIST, so operators (and bench_sse) can count it.
CLIENT_NAME = "orchestrator-sse-hub"


#: How a final event's JSON begins (every event is a dict whose first key is ``type``): the
#: hub tells it from the others without decoding each event.
FINAL_PREFIX = json.dumps({"type": FINAL})[:-1]


def sse_frame(event_id: str, kind: str, data: str) -> str:
    """One Server-Sent Event; ``data`` is the event's JSON exactly as it was published."""
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n"


def entry_position(entry_id: str) -> tuple[int, int]:
    """A stream entry's id (``<ms>-<seq>``) as a tuple that compares as the ids do."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class Subscription:
    execution_id: str
    cursor: str
    # SimpleQueue, looked up per subscription: under gevent it is the patched, cooperative
    # one, and a put (1,000 per event at 1,000 subscribers) costs about half a Queue's.
    queue: queue.SimpleQueue[str | None] = field(default_factory=lambda: queue.SimpleQueue())
    #: ``cursor`` parsed once: the hub compares it with every entry for every subscriber.
    position: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        self.position = entry_position(self.cursor)


class StreamHub:
    """Started lazily on the first subscriber; one daemon thread (a greenlet under gevent)."""

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        self._thread: threading.Thread | None = None
        self.client: redis.Redis | None = None
        #: A stream of this hub's own that every XREAD also watches: a new subscriber writes
        #: to it, so the blocked read returns at once and the next one includes its run.
        self._wake_key = f"{REDIS_PREFIX}sse:wake:{uuid.uuid4().hex}"
        self._waker: redis.Redis | None = None

    def subscribe(self, execution_id: str, last_event_id: str | None = None) -> Subscription:
        sub = Subscription(execution_id, last_event_id or "0-0")
        self._replay(sub)
        with self._lock:
            watched = execution_id in self._subs
            self._subs.setdefault(execution_id, set()).add(sub)
            if self._thread is None:
                self.client = redis.Redis.from_url(
                    self._url, single_connection_client=True, client_name=CLIENT_NAME
                )
                self._thread = threading.Thread(target=self._loop, name="sse-hub", daemon=True)
                self._thread.start()
        if not watched:
            self._wake()
        return sub

    def _replay(self, sub: Subscription) -> None:
        """Hand a new subscriber what its run's stream holds already, read here and now: its
        first event does not wait for the hub's next read (the hub goes on from its cursor,
        so nothing is sent twice or skipped)."""
        after = sub.cursor
        try:
            entries: Any = self._other_client().xrange(
                stream_key(sub.execution_id),
                min=f"({after}" if after != "0-0" else "-",
                count=REPLAY_COUNT,
            )
        except redis.RedisError as exc:  # the hub's own read reports the outage
            log.debug("SSE replay failed: %s", exc)
            return
        _hand(sub, render_frames(entries))

    def _other_client(self) -> redis.Redis:
        """The connection pool for everything but the hub's blocking read."""
        with self._lock:
            if self._waker is None:
                self._waker = redis.Redis.from_url(self._url)
            return self._waker

    def _wake(self) -> None:
        """Make the hub's blocked XREAD return now, so it reads the new run's stream too."""
        try:
            pipe = self._other_client().pipeline(transaction=False)
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(self._wake_key, 3600)
            pipe.execute()
        except redis.RedisError as exc:  # the hub's own read reports the outage
            log.debug("SSE hub wake-up failed: %s", exc)

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.execution_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.execution_id]

    def subscribers(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())

    def _loop(self) -> None:
        assert self.client is not None
        woken = "$"  # only wake-ups written from now on
        while True:
            with self._lock:
                cursors: dict[Any, Any] = {
                    stream_key(eid): min(subs, key=lambda s: s.position).cursor
                    for eid, subs in self._subs.items()
                }
            cursors[self._wake_key] = woken
            try:
                response: Any = self.client.xread(cursors, block=BLOCK_MS, count=1000)
            except redis.RedisError as exc:
                log.warning("SSE hub lost Redis (%s); retrying", exc)
                threading.Event().wait(1)
                continue
            for raw_key, entries in response or []:
                key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
                if key == self._wake_key:
                    last = entries[-1][0]
                    woken = last.decode() if isinstance(last, bytes) else last
                    continue
                self._deliver(key.rsplit(":", 1)[1], entries, cursors[key])

    def _deliver(self, execution_id: str, entries: list[Any], read_from: str) -> None:
        # Only subscribers whose cursor this read started at or before see its entries; one
        # that joined meanwhile with an older cursor is served by the next read, from its own
        # cursor, so it never skips the gap between the two.
        start = entry_position(read_from)
        with self._lock:
            subs = [s for s in self._subs.get(execution_id, ()) if s.position >= start]
        frames = render_frames(entries)
        for sub in subs:
            _hand(sub, frames)


#: A frame ready to send: its entry's position and id, the frame, whether it is the last.
Frame = tuple[tuple[int, int], str, str, bool]


def render_frames(entries: list[Any]) -> list[Frame]:
    """Each stream entry rendered once, whatever the number of readers."""
    frames = []
    for raw_id, fields in entries:
        entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        data = fields[b"data"] if b"data" in fields else fields["data"]
        data = data.decode() if isinstance(data, bytes) else data
        final = data.startswith(FINAL_PREFIX)
        frame = sse_frame(entry_id, "final" if final else "progress", data)
        frames.append((entry_position(entry_id), entry_id, frame, final))
    return frames


def _hand(sub: Subscription, frames: list[Frame]) -> None:
    """Queue for ``sub`` the frames past its cursor, and the end after a final one (also a
    final one at or before its cursor: the subscriber saw it, or claims to, and nothing of
    the run comes after it)."""
    for position, entry_id, frame, final in frames:
        if position > sub.position:
            sub.cursor, sub.position = entry_id, position
            sub.queue.put(frame)
        if final:
            sub.queue.put(None)
            return

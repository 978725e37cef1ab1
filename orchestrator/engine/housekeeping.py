"""Storage housekeeping (beat, ``coordinator.housekeeping``): delete what has expired, measure
what is left against the ``storage`` limits of ``resources.yaml``.

The rule. An object is deleted when it is past its expiry **and** the run it belongs to is not
live (``pending``, ``running``, ``recovering``) at the time of the sweep. Never before expiry:
a failed, cancelled or stopped run may be resumed and its unexpired outputs are its
checkpoints. After expiry a checkpoint is useless anyway (``Outputs.available`` and
``ObjectStore.stat`` refuse an expired object, so a resume reruns the stage), which is why a
resumable run does not protect it; a live run does, because one of its stages may be streaming
the object right now (``iter_chunks`` checks the expiry once, before the first chunk), and a
delete under a reader would turn a finished read into a failed stage. The next sweep after
the run ends deletes it.

What is swept is what the bucket holds under ``outputs/<execution>/`` and
``deliverables/<execution>/``: an object's expiry is the one its row recorded (the stage's
``data_reference.expires_at``, ``Deliverable.expires_at``) or, for an object no row points at
(an earlier attempt's output), the ``expires-at`` stamped on the object itself. An object with
no known expiry is kept. Expired deliverable rows of runs that are not live are deleted with
their objects, so no run lists a link that cannot work. Outputs in the Redis tier carry a TTL
(``SET ... EX``) and Redis drops them by itself; housekeeping only measures that tier.

Usage (object bytes and count from the same walk of the bucket, Redis's ``used_memory``) is
kept in one Redis hash that ``/metrics`` and ``GET /resources`` read: a scrape never walks
the bucket.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from orchestrator.constants import ExecutionStatus, redis_key
from orchestrator.db import Deliverable, PipelineExecution, StageExecution
from orchestrator.errors import ObjectMissing, OrchestratorError
from orchestrator.runtime import Runtime

log = logging.getLogger(__name__)

#: Runs whose objects are never deleted, expired or not (see the module docstring).
LIVE_STATUSES = frozenset(
    {ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.RECOVERING}
)
#: The prefixes housekeeping may delete under; the first path segment after one is the run.
SWEPT_PREFIXES = ("outputs/", "deliverables/")
#: Redis hash of the last measurement: ``object_bytes``, ``objects``, ``measured_at``.
USAGE_KEY = redis_key("storage", "usage")
#: Runs looked up per database query.
BATCH = 500


@dataclass
class SweepReport:
    """What one sweep did and measured."""

    deleted_objects: int = 0
    deleted_bytes: int = 0
    kept_live: int = 0
    deleted_rows: int = 0
    object_bytes: int = 0
    objects: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass(frozen=True)
class _Listed:
    key: str
    size: int
    execution_id: str | None


def sweep(runtime: Runtime, *, now: datetime | None = None) -> SweepReport:
    """Delete expired objects of runs that are not live; record the bucket's usage."""
    now = now or datetime.now(UTC)
    report = SweepReport()
    listed = [_listed(key, size) for key, size in runtime.store.listing()]
    runs = {item.execution_id for item in listed if item.execution_id}
    live, expiries = _known(runtime, runs)
    for item in listed:
        if item.execution_id is not None and _expired(runtime, item, expiries, now):
            if item.execution_id in live:
                report.kept_live += 1
            elif _delete(runtime, item.key):
                report.deleted_objects += 1
                report.deleted_bytes += item.size
                continue
        report.objects += 1
        report.object_bytes += item.size
    report.deleted_rows = _delete_expired_rows(runtime, now)
    runtime.redis.hset(
        USAGE_KEY,
        mapping={
            "object_bytes": report.object_bytes,
            "objects": report.objects,
            "measured_at": now.isoformat(),
        },
    )
    log.info("housekeeping: %s", report.as_dict())
    return report


def usage(runtime: Runtime) -> dict[str, Any]:
    """Bytes per tier against the limits: the last sweep's object storage, Redis now."""
    stored = {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in runtime.redis.hgetall(USAGE_KEY).items()
    }
    limits = runtime.pool.storage
    return {
        "object_storage": {
            "bytes": int(stored["object_bytes"]) if "object_bytes" in stored else None,
            "objects": int(stored["objects"]) if "objects" in stored else None,
            "measured_at": stored.get("measured_at"),
            "limit_bytes": limits.object_storage_bytes,
        },
        "redis": {
            "used_bytes": int(runtime.redis.info("memory").get("used_memory", 0)),
            "limit_bytes": limits.redis_bytes,
        },
    }


def _listed(key: str, size: int) -> _Listed:
    for prefix in SWEPT_PREFIXES:
        if key.startswith(prefix):
            execution_id = key[len(prefix) :].split("/", 1)[0]
            return _Listed(key, size, execution_id or None)
    return _Listed(key, size, None)


def _known(runtime: Runtime, runs: Iterable[str]) -> tuple[set[str], dict[str, datetime]]:
    """Which of ``runs`` are live, and the expiry each row records for its object's key."""
    live: set[str] = set()
    expiries: dict[str, datetime] = {}
    wanted = sorted(runs)
    with runtime.db.session() as session:
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start : start + BATCH]
            live.update(
                session.scalars(
                    select(PipelineExecution.execution_id).where(
                        PipelineExecution.execution_id.in_(batch),
                        PipelineExecution.status.in_([s.value for s in LIVE_STATUSES]),
                    )
                )
            )
            for ref in session.scalars(
                select(StageExecution.data_reference).where(StageExecution.execution_id.in_(batch))
            ):
                if ref and ref.get("storage_type") == "s3" and ref.get("expires_at"):
                    expiries[ref["storage_key"]] = _aware(ref["expires_at"])
            for key, expires_at in session.execute(
                select(Deliverable.storage_key, Deliverable.expires_at).where(
                    Deliverable.execution_id.in_(batch)
                )
            ):
                if expires_at is not None:
                    expiries[key] = _aware(expires_at)
    return live, expiries


def _expired(runtime: Runtime, item: _Listed, expiries: dict[str, datetime], now: datetime) -> bool:
    expires_at = expiries.get(item.key)
    if expires_at is None:  # no row points at it: the expiry stamped on the object decides
        try:
            stamped = runtime.store.expires_at(item.key)
        except OrchestratorError:  # gone meanwhile, or unreadable: nothing to decide on
            return False
        if stamped is None:
            return False
        expires_at = _aware(stamped)
    return expires_at <= now


def _delete(runtime: Runtime, key: str) -> bool:
    try:
        runtime.store.delete(key)
    except ObjectMissing:
        return True
    except OrchestratorError as error:  # one object the store refuses must not stop the sweep
        log.warning("housekeeping: could not delete %s: %s", key, error)
        return False
    return True


def _delete_expired_rows(runtime: Runtime, now: datetime) -> int:
    """Expired deliverable rows of runs that are not live (their objects went with them)."""
    with runtime.db.session() as session:
        live = select(PipelineExecution.execution_id).where(
            PipelineExecution.status.in_([s.value for s in LIVE_STATUSES])
        )
        result = session.execute(
            delete(Deliverable).where(
                Deliverable.expires_at <= now, Deliverable.execution_id.not_in(live)
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)


def _aware(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

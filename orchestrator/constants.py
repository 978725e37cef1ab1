"""Names shared by every process: queues, Redis key prefixes, priorities.

One module so that a key written by a worker and read by the API can never drift apart.
"""

from __future__ import annotations

from enum import StrEnum

#: Queue of the coordinator tasks (start, stage bookkeeping, finish, reconcile).
COORDINATOR_QUEUE = "coordinator"

#: Every Redis key this product writes starts with this prefix, so one DB can be shared.
REDIS_PREFIX = "orch:"

#: Celery task names are ``stage.<worker_type>``; the prefix keeps them out of user namespaces.
STAGE_TASK_PREFIX = "stage."


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def celery_priority(self) -> int:
        """Redis transport priorities: 0 is served first."""
        return {"high": 0, "normal": 3, "low": 6}[self.value]


class ExecutionStatus(StrEnum):
    PENDING = "pending"  # recorded, waiting for admission
    QUEUED = "queued"  # admitted, canvas sent
    RUNNING = "running"
    RECOVERING = "recovering"  # lost a worker or its live state; resuming on its own
    COMPLETED = "completed"
    STOPPED = "stopped"  # a stage said continue: false; finished cleanly
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        ExecutionStatus.COMPLETED,
        ExecutionStatus.STOPPED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
    }
)


class StageStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    CACHED = "cached"  # result cache hit: skipped, cost nothing
    SKIPPED = "skipped"  # an upstream stage said continue: false
    FAILED = "failed"
    CANCELLED = "cancelled"


def redis_key(*parts: str) -> str:
    """``redis_key("lease", run_id)`` -> ``orch:lease:<run_id>``."""
    return REDIS_PREFIX + ":".join(parts)


#: Stage statuses after which a stage does nothing more.
STAGE_ENDED = frozenset(
    {
        StageStatus.COMPLETED,
        StageStatus.CACHED,
        StageStatus.SKIPPED,
        StageStatus.FAILED,
        StageStatus.CANCELLED,
    }
)

#: Execution statuses from which a run may be admitted and launched.
LAUNCHABLE = frozenset({ExecutionStatus.PENDING, ExecutionStatus.RECOVERING})

#: Run statuses (in the run's Redis meta) after which no further stage starts.
RUN_HALTED = frozenset({"cancelled", "failing", "failed"})

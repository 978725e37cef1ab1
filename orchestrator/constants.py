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
    """A run's status in the database: what the API and the CLI report."""

    PENDING = "pending"  # recorded, waiting for admission (or for its launch)
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
    """A stage's status, in its live record and its row."""

    PENDING = "pending"
    WAITING = "waiting"  # for a capacity slot of its worker type; asks again shortly
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed; the next comes after a backoff
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


class LiveStatus(StrEnum):
    """A run's status in its live state (Redis meta), which every stage reads before it
    starts: ``failing`` once a stage failed for good (nothing new starts; ``finish`` will
    close the run as failed). ``finish`` writes the terminal status here too."""

    RUNNING = "running"
    FAILING = "failing"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"


class AdmissionDecision(StrEnum):
    """What admission answers a run (not a run status: a run that must wait stays pending)."""

    ADMITTED = "admitted"
    WAITING = "waiting"  # in the priority queue until a release lets it in
    REFUSED = "refused"
    UNSEEDED = "unseeded"  # Redis lost the quota counters; rebuild them and ask again


#: Live statuses after which no further stage starts.
RUN_HALTED = frozenset({LiveStatus.CANCELLED, LiveStatus.FAILING, LiveStatus.FAILED})
#: Stage statuses of a stage that may still do something (a worker holds or will retry it).
STAGE_ACTIVE = frozenset({StageStatus.RUNNING, StageStatus.RETRYING, StageStatus.WAITING})

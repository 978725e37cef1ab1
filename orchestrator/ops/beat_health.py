"""Beat's liveness, for a healthcheck: the scheduler touches a file on every tick.

Celery beat has no ping (it consumes no queue), so ``orchestrator beat --check`` (compose's
healthcheck of the beat service) asks how old that file is. Beat ticks at least once per
shortest schedule interval (15 s for the reconciler), so a file older than a minute means the
loop is stuck or gone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler

#: A heartbeat older than this means beat is not ticking.
MAX_AGE_S = 60.0
#: The scheduler every beat of ours runs, alone (``orchestrator beat``) or embedded in the
#: coordinator's worker (``orchestrator workers``), so ``beat --check`` sees either tick.
SCHEDULER = "orchestrator.ops.beat_health:HeartbeatScheduler"
SCHEDULE_FILE = "celerybeat-schedule"


def heartbeat_path(schedule_filename: str | Path) -> Path:
    return Path(f"{schedule_filename}.heartbeat")


class HeartbeatScheduler(PersistentScheduler):
    """Celery's persistent scheduler that also touches ``<schedule file>.heartbeat`` per tick."""

    schedule_filename: str  # set by PersistentScheduler.__init__ (untyped in celery-types)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        heartbeat_path(self.schedule_filename).touch()
        return float(super().tick(*args, **kwargs))


def heartbeat_age(schedule_filename: str | Path, *, now: float | None = None) -> float | None:
    """Seconds since beat last ticked, or None when it never did."""
    try:
        touched = heartbeat_path(schedule_filename).stat().st_mtime
    except FileNotFoundError:
        return None
    return (time.time() if now is None else now) - touched

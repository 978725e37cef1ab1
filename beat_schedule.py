"""Celery beat schedule: periodic housekeeping of the coordinator.

``orchestrator beat`` (or ``celery -A orchestrator.celery_app beat``) loads this through the
Celery app factory. Intervals are short because each pass is cheap and idempotent.
"""

from __future__ import annotations

from typing import Any

#: task name -> schedule entry; the reconciler drives on or fails runs whose leases expired
#: and admits pending runs that fit now.
BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "reconcile-executions": {
        "task": "coordinator.reconcile",
        "schedule": 15.0,
        "options": {"queue": "coordinator", "expires": 14.0},
    },
    "refit-estimates": {
        "task": "coordinator.refit_estimates",
        "schedule": 30.0,
        "options": {"queue": "coordinator", "expires": 29.0},
    },
    "refresh-worker-health": {
        "task": "coordinator.refresh_worker_health",
        "schedule": 30.0,
        "options": {"queue": "coordinator", "expires": 29.0},
    },
    # Deletes expired outputs and deliverables of runs that are not live and measures storage
    # (orchestrator/engine/housekeeping.py); a walk of the bucket, so not every few seconds.
    "storage-housekeeping": {
        "task": "coordinator.housekeeping",
        "schedule": 300.0,
        "options": {"queue": "coordinator", "expires": 299.0},
    },
}

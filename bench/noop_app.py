"""The product's Celery app plus bare no-op tasks, so both run on the very same workers."""

from __future__ import annotations

from orchestrator.celery_app import create_celery_app
from orchestrator.settings import Settings

app = create_celery_app(Settings.from_env())


@app.task(name="bench.noop", queue="echo")
def noop(upstream: object = None) -> None:
    """A bare Celery task: the baseline the engine's per-stage overhead is measured against."""
    return None

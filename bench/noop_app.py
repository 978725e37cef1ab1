"""The product's Celery app plus bare no-op tasks, so both run on the very same workers."""

from __future__ import annotations

from orchestrator.celery_app import create_celery_app
from orchestrator.settings import Settings

app = create_celery_app(Settings.from_env())


@app.task(name="bench.noop", queue="echo")
def noop(upstream: object = None) -> None:
    """A bare Celery task: the baseline the engine's per-stage overhead is measured against."""
    return None


@app.task(name="bench.noop_kw", queue="echo")
def noop_kw(upstream: object = None, **kwargs: object) -> None:
    """A bare task that takes a stage's kwargs: its signature is shaped like a stage's."""
    return None

"""The product's Celery app plus bare no-op tasks, so both run on the very same workers."""

from __future__ import annotations

import time

from orchestrator.celery_app import create_celery_app
from orchestrator.settings import Settings

app = create_celery_app(Settings.from_env())
#: Where ``stamp`` tasks note their bodies' start and end.
STAMPS_KEY = "bench:stamps"


@app.task(name="bench.noop", queue="echo")
def noop(upstream: object = None) -> None:
    """A bare Celery task: the baseline the engine's per-stage overhead is measured against."""
    return None


@app.task(name="bench.noop_kw", queue="echo")
def noop_kw(upstream: object = None, **kwargs: object) -> None:
    """A bare task that takes a stage's kwargs: its signature is shaped like a stage's."""
    return None


@app.task(name="bench.stamp", queue="echo")
def stamp(upstream: object = None, **kwargs: object) -> None:
    """A lean task that notes when its body began and ended: the bare chain's hop, measured
    as the engine's is (the next body's start less the previous body's end)."""
    began = time.time()
    runtime = app.conf.orchestrator_runtime
    runtime.redis.rpush(STAMPS_KEY, f"{began:.6f} {time.time():.6f}")

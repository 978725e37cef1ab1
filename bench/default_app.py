"""Bare Celery with its defaults (only the broker and the result backend set): what a stage
costs out of the box, with no events, early acknowledgement and a prefetch of four."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("plain", broker=os.environ["ORCH_BROKER_URL"], backend=os.environ["ORCH_REDIS_URL"])
app.conf.task_default_queue = "plain"  # its own queue on the same broker


@app.task(name="plain.noop")
def noop(upstream: object = None) -> None:
    """The same no-op as bench.noop_app's, on a default-configured app."""
    return None

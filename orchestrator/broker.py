"""The Celery app's configuration: queues, routes, serialization, delivery guarantees.

No tasks here: sending a task by name needs none, so every process (API, CLI, tests) builds
its app from this; worker processes add the tasks (``orchestrator.celery_app``).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from beat_schedule import BEAT_SCHEDULE
from orchestrator.constants import COORDINATOR_QUEUE, STAGE_TASK_PREFIX
from orchestrator.sdk import Registry
from orchestrator.settings import Settings

#: The longest a stage may run (template validation enforces it); see visibility_timeout.
MAX_STAGE_TIMEOUT_S = 3600


def _route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
    """``stage.<worker type>`` goes to the worker type's queue; everything else coordinates."""
    if name.startswith(STAGE_TASK_PREFIX):
        return {"queue": name.removeprefix(STAGE_TASK_PREFIX)}
    return {"queue": COORDINATOR_QUEUE}


def make_app(settings: Settings, registry: Registry) -> Celery:
    """The app for ``settings`` without tasks: one queue per registered worker type plus
    the coordinator's, and the delivery guarantees the engine relies on. Enough to send
    tasks by name; a worker process registers the tasks on it (``celery_app``)."""
    app = Celery("orchestrator", set_as_current=False)
    exchange = Exchange("orchestrator", type="direct")
    queues = [Queue(COORDINATOR_QUEUE, exchange, routing_key=COORDINATOR_QUEUE)] + [
        Queue(name, exchange, routing_key=name) for name in registry.names()
    ]
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.redis_url,
        # JSON only: nothing a client sends can become a pickle on a worker.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_queues=queues,
        task_default_queue=COORDINATOR_QUEUE,
        task_default_exchange="orchestrator",
        task_routes=(_route,),
        # Events (ORCH_TASK_EVENTS, off by default as in Celery): they serve monitoring only
        # and cost a stage four broker messages and a backend write. Flower turns workers'
        # events on when it runs (its enable_events), so it sees every task either way.
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        task_track_started=settings.task_events,
        # Stages are idempotent (output keys derive from execution, stage and inputs), so a
        # message is acknowledged only after it ran, and a worker killed mid-stage gives the
        # message back instead of losing it (celery#3541, #7924).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Stages are long and unequal: a worker takes one message at a time, so a slow
        # stage never holds others hostage in its prefetch buffer.
        worker_prefetch_multiplier=1,
        broker_transport_options={
            # Redis redelivers unacked messages after this long: it must exceed the longest
            # stage, or a slow stage runs twice (celery#2599).
            "visibility_timeout": 2 * MAX_STAGE_TIMEOUT_S,
            # Priorities high/normal/low map to 0/3/6 on Redis' emulated priority queues.
            "queue_order_strategy": "priority",
            "priority_steps": [0, 3, 6],
        },
        result_backend_transport_options={"visibility_timeout": 2 * MAX_STAGE_TIMEOUT_S},
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    app.conf.beat_schedule = BEAT_SCHEDULE
    app.conf.orchestrator_settings = settings
    return app

"""The Celery app: ``celery -A orchestrator.celery_app worker -Q <queues>`` finds ``app`` here.

Importing this module does nothing; ``app`` is built on first access (module ``__getattr__``)
from ``Settings.from_env()``, so ``celery -A`` works as any Celery user expects while tests
and tools build their own with ``create_celery_app(settings)``. This is the entry point that
builds the app with its tasks and hands it to the engine's ``Runtime``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from orchestrator import logs
from orchestrator.broker import MAX_STAGE_TIMEOUT_S, make_app
from orchestrator.engine import tasks
from orchestrator.errors import OrchestratorError
from orchestrator.sdk import load_worker_modules
from orchestrator.settings import Settings

__all__ = ["MAX_STAGE_TIMEOUT_S", "create_celery_app"]


def create_celery_app(settings: Settings) -> Celery:
    """The app for ``settings`` with the coordinator's tasks and one stage task per worker
    type registered on it."""
    registry = load_worker_modules(settings.worker_modules)
    app = make_app(settings, registry)
    tasks.register(app, settings, registry)
    logs.install(app, settings)
    if settings.tracing:
        _trace_workers()
    if settings.metrics_port:
        _serve_metrics(app, settings)
    return app


def _trace_workers() -> None:
    """Instrument each worker process after the fork (and this one, for solo pools)."""
    from celery.signals import worker_process_init

    from orchestrator.ops.tracing import instrument

    instrument("orchestrator-worker")
    worker_process_init.connect(lambda **_: instrument("orchestrator-worker"), weak=False)


def _serve_metrics(app: Celery, settings: Settings) -> None:
    """The worker's main process serves the summed metrics of its prefork children (and its
    own) once the worker is ready: ``ORCH_METRICS_PORT``, ``PROMETHEUS_MULTIPROC_DIR``."""
    import logging

    from celery.signals import worker_ready

    from orchestrator.engine.metrics import serve_worker_metrics

    def serve(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        try:
            serve_worker_metrics(settings.metrics_port, settings.metrics_dir)
        except OSError as error:  # another worker of this host has the port: it serves the dir
            logging.getLogger(__name__).warning(
                "metrics not served on port %s: %s", settings.metrics_port, error
            )

    worker_ready.connect(serve, weak=False)


_app: Celery | None = None


def __getattr__(name: str) -> Celery:
    global _app
    if name in {"app", "celery"}:
        if _app is None:
            try:
                _app = create_celery_app(Settings.from_env())
            except OrchestratorError as error:
                # ``celery -A`` would print "Unable to load celery application" and a
                # traceback; a bad setting or config file deserves the one line that names it.
                raise SystemExit(f"error: {error}") from error
        return _app
    raise AttributeError(name)

"""Traces, with the optional ``otel`` extra: one trace per run, from the API to the last stage.

Off unless ``ORCH_TRACING=true`` and OpenTelemetry is installed (``pip install
orchestrator[otel]``). Then the Celery, Flask, Redis and SQLAlchemy instrumentations carry the
trace context through every task's headers, and the engine adds its own spans: ``submit``
(API or CLI), ``admission`` (the coordinator's reservation), ``stage`` (worker type, action,
attempt, bytes in and out) and ``finish``. Spans go to the OTLP exporter when
``opentelemetry-exporter-otlp`` is installed (``OTEL_EXPORTER_OTLP_ENDPOINT``), else nowhere;
a test passes its own provider (an in-memory exporter).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger(__name__)

trace: ModuleType | None
try:  # looked up once: a failed import is not cached, and a stage opens a span each time
    from opentelemetry import trace
except ImportError:  # pragma: no cover - the otel extra is not installed
    trace = None

#: The instrumentation scope of the engine's own spans.
TRACER = "orchestrator"


def recording() -> bool:
    """Whether spans go anywhere: OpenTelemetry is installed and a tracer provider is set.
    Without one a span would be a non-recording no-op: a stage skips building it at all."""
    return trace is not None and not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    )


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span of the current trace while spans are recorded (``None`` otherwise);
    ``None`` attributes are left out."""
    if not recording():
        yield None
        return
    assert trace is not None
    with trace.get_tracer(TRACER).start_as_current_span(name) as current:
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(f"orchestrator.{key}", value)
        yield current


P = ParamSpec("P")
R = TypeVar("R")


def traced(name: str, **arguments: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the function in a span ``name`` whose attributes are the values of the arguments
    named (``traced("stage", execution="execution_id")``); a plain call without OpenTelemetry."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not recording():
                return function(*args, **kwargs)
            bound = signature.bind_partial(*args, **kwargs).arguments
            values = {key: bound.get(argument) for key, argument in arguments.items()}
            with span(name, **values):
                return function(*args, **kwargs)

        return wrapper

    return decorate


def annotate(**attributes: Any) -> None:
    """Add attributes to the current span (none while spans are not recorded)."""
    if not recording():
        return
    assert trace is not None
    current = trace.get_current_span()
    for key, value in attributes.items():
        if value is not None:
            current.set_attribute(f"orchestrator.{key}", value)


def instrument(service: str, *, flask_app: Any = None, provider: Any = None) -> bool:
    """Turn the instrumentations on for this process; True if it could. ``provider``: a
    TracerProvider of the caller's (tests); else one exporting over OTLP if available."""
    try:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    except ImportError:
        log.warning("ORCH_TRACING is on but OpenTelemetry is not installed: pip install '.[otel]'")
        return False
    if provider is None:
        provider = _default_provider(service)
    assert trace is not None  # the instrumentations above need it
    trace.set_tracer_provider(provider)
    for instrumentor in (CeleryInstrumentor(), RedisInstrumentor(), SQLAlchemyInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
    if flask_app is not None:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(flask_app, tracer_provider=provider)
    return True


def _default_provider(service: str) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning("no OTLP exporter installed (opentelemetry-exporter-otlp): spans are dropped")
        return provider
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider

"""One trace per run: submit, admission, every stage and finish, joined through Celery's
headers (the ``otel`` extra), recorded by an in-memory exporter in this process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.constants import ExecutionStatus
from orchestrator.ops.tracing import instrument
from tests.engine.conftest import Engine, wait_until

trace_sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    exporter = InMemorySpanExporter()
    provider = trace_sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert instrument("orchestrator-test", provider=provider)
    yield exporter
    for instrumentor in (CeleryInstrumentor(), RedisInstrumentor(), SQLAlchemyInstrumentor()):
        instrumentor.uninstrument()


def test_a_run_is_one_trace_from_submit_to_finish(
    fresh: Engine, spans: InMemorySpanExporter
) -> None:
    execution_id = fresh.submit("linear5", {"start": 1})
    assert fresh.wait(execution_id).status == ExecutionStatus.COMPLETED

    def ours_when_finish_ended() -> list | None:
        # The run reads as completed a moment before its finish span ends.
        mine = [
            s
            for s in spans.get_finished_spans()
            if s.attributes.get("orchestrator.execution") == execution_id
        ]
        return mine if any(s.name == "finish" for s in mine) else None

    ours = wait_until(ours_when_finish_ended, "the finish span ended")
    recorded = spans.get_finished_spans()
    names = sorted(s.name for s in ours)
    assert names.count("stage") == 5
    assert {"submit", "admission", "finish"} <= set(names)
    traces = {s.context.trace_id for s in ours}
    assert len(traces) == 1, names  # one trace for the whole run, across every task
    (trace_id,) = traces
    in_trace = [s for s in recorded if s.context.trace_id == trace_id]
    assert any(s.name.startswith("run/stage.sum") for s in in_trace)  # Celery's own spans
    stages = [s for s in ours if s.name == "stage"]
    for stage in stages:
        assert stage.attributes["orchestrator.worker_type"] == "sum"
        assert stage.attributes["orchestrator.attempt"] == 1
        assert stage.attributes["orchestrator.bytes_written"] > 0
    admission = next(s for s in ours if s.name == "admission")
    assert admission.attributes["orchestrator.decision"] == "admitted"

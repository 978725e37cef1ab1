"""Test your worker types without a broker: call the function with a recording context.

``RecordingSink`` is the SDK's own extension point (``orchestrator.sdk.StageSink``), not a
stand-in for a service: progress, usage, deliverables, cooldowns and throttles are simply kept
in lists. Public, so worker types outside this repository are tested the same way::

    ctx, sink = stage_context("summariser", "summarise")
    result = summarise(ctx, {"fetch": {"documents": [...]}}, {})
    assert sink.used("openai_api") == 1200
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from orchestrator.sdk import StageContext
from orchestrator.settings import Settings


class RecordingSink:
    """Keeps every report a stage makes."""

    def __init__(self) -> None:
        self.progress_reports: list[tuple[float, str]] = []
        self.usages: list[tuple[str, float]] = []
        self.deliveries: dict[str, bytes] = {}
        self.cooldowns: list[tuple[str, float]] = []
        self.throttles: list[tuple[str, float]] = []

    def progress(self, ctx: StageContext, percent: float, message: str) -> None:
        self.progress_reports.append((percent, message))

    def usage(self, ctx: StageContext, resource: str, quantity: float) -> None:
        self.usages.append((resource, quantity))

    def deliver(self, ctx: StageContext, name: str, data: bytes, content_type: str) -> str:
        self.deliveries[name] = data
        return f"deliverables/{ctx.execution_id}/{name}"

    def cooldown(self, ctx: StageContext, resource: str, seconds: float) -> None:
        self.cooldowns.append((resource, seconds))

    def throttle(self, ctx: StageContext, resource: str, units: float) -> float:
        self.throttles.append((resource, units))
        return 0.0

    def used(self, resource: str) -> float:
        return sum(q for r, q in self.usages if r == resource)


def stage_context(
    worker_type: str, action: str, *, settings: Settings | None = None, stage_id: str = "stage"
) -> tuple[StageContext, RecordingSink]:
    """A context for calling ``worker_type.action`` directly, and the sink it reports to."""
    sink = RecordingSink()
    ctx = StageContext(
        execution_id="exec-test",
        stage_id=stage_id,
        worker_type=worker_type,
        action=action,
        settings=settings or Settings(),
        sink=sink,
    )
    return ctx, sink


def llm_settings(base_url: str) -> Settings:
    """Settings that point the workers at a local OpenAI-protocol server."""
    return Settings(llm_base_url=base_url, llm_api_key=SecretStr("sk-test"), llm_model="test-model")


def output_of(result: Any) -> Any:
    """A worker's output whether it returned a ``StageResult`` or a plain value."""
    return getattr(result, "output", result)

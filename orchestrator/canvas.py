"""A plan becomes a Celery canvas: ``Series`` a chain, ``Parallel`` a group (a chord when
something follows it).

Each stage signature carries only the execution id, stage id and launch token (its spec lives
in the run's Redis plan), so a message stays a few hundred bytes plus the packets it receives,
and the serialised canvas grows linearly with the number of stages (celery#10171). The launch
token lets a message of an earlier launch of a resumed run (a killed worker's task redelivered
late) recognise itself as stale.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, chain, group
from celery.canvas import Signature

from orchestrator.constants import STAGE_TASK_PREFIX
from orchestrator.core.planner import Node, Parallel, Plan, Series, Step

#: Seconds a stage may overrun its soft limit (cleanup, writing its failure) before the hard kill.
HARD_LIMIT_GRACE_S = 30


def build_canvas(
    app: Celery,
    execution_id: str,
    plan: Plan,
    specs: dict[str, dict[str, Any]],
    *,
    priority: int,
    launch: str | None = None,
) -> Signature:
    """The whole run: the plan's canvas, then ``coordinator.finish``."""
    options = {"priority": priority}

    def convert(node: Node) -> Signature:
        if isinstance(node, Step):
            spec = specs[node.stage]
            return app.signature(
                STAGE_TASK_PREFIX + spec["worker"],
                kwargs={
                    "execution_id": execution_id,
                    "stage_id": node.stage,
                    "deps": spec["depends_on"],
                    "launch": launch,
                },
                soft_time_limit=spec["timeout_s"],
                time_limit=spec["timeout_s"] + HARD_LIMIT_GRACE_S,
                **options,
            )
        parts = [convert(part) for part in node.parts]
        if isinstance(node, Series):
            return chain(*parts)
        assert isinstance(node, Parallel)
        return group(*parts)

    finish = app.signature(
        "coordinator.finish", kwargs={"execution_id": execution_id, "launch": launch}, **options
    )
    return chain(convert(plan.root), finish)

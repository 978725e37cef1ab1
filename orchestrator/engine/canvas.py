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


def finish_task_id(execution_id: str, launch: str | None) -> str:
    """The Celery task id of a launch's ``coordinator.finish``: known in advance, so a caller
    can wait on the run's end as on any Celery result."""
    return f"{execution_id}.finish.{launch or 'run'}"


def build_canvas(
    app: Celery,
    execution_id: str,
    plan: Plan,
    specs: dict[str, dict[str, Any]],
    *,
    priority: int,
    launch: str | None = None,
    rank: int | None = None,
) -> Signature:
    """The whole run: the plan's canvas, then ``coordinator.finish``. ``priority`` is the
    messages' broker priority; ``rank`` the run's priority rank, by which its stages wait for
    a capacity slot."""
    options = {"priority": priority}

    def convert(node: Node, feeds_chord: bool = False) -> Signature:
        if isinstance(node, Step):
            spec = specs[node.stage]
            # A stage reads its inputs' packets from the run's live state, so its signature
            # is immutable: the packet before it does not ride in its message. Only a chord
            # (fan-in) needs results stored, to count its header's ends; everywhere else
            # storing one is a SET and a PUBLISH per stage that nothing reads: the run's
            # durable record is its live state and the database, not Celery results.
            return app.signature(
                STAGE_TASK_PREFIX + spec["worker"],
                kwargs={
                    "execution_id": execution_id,
                    "stage_id": node.stage,
                    "deps": spec["depends_on"],
                    "launch": launch,
                    **({"rank": rank} if rank is not None else {}),
                },
                soft_time_limit=spec["timeout_s"],
                time_limit=spec["timeout_s"] + HARD_LIMIT_GRACE_S,
                ignore_result=not feeds_chord,
                immutable=True,
                **options,
            )
        if isinstance(node, Series):
            last = len(node.parts) - 1
            return chain(
                *[convert(p, feeds_chord and i == last) for i, p in enumerate(node.parts)], app=app
            )
        assert isinstance(node, Parallel)
        return group(*[convert(part, True) for part in node.parts])

    # The top series is flattened into the chain that ends with ``finish``. Every chain is
    # built as given (``app=`` skips ``chain(X, Y)``'s folding, which clones each signature
    # twice): applying it unrolls nested chains and makes each group that something follows
    # a chord, as folding would have.
    top = plan.root.parts if isinstance(plan.root, Series) else (plan.root,)
    finish = app.signature(
        "coordinator.finish",
        kwargs={"execution_id": execution_id, "launch": launch},
        task_id=finish_task_id(execution_id, launch),
        immutable=True,
        **options,
    )
    return chain(*[convert(part) for part in top], finish, app=app)

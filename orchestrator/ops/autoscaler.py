"""Resize each worker type's process pool to what ``GET /scaling`` asks for, on one machine.

``orchestrator workers --autoscale`` runs a ``PoolSizer`` beside the fleet: every tick it reads
the scaling report and sends Celery's own remote control, ``pool_grow`` / ``pool_shrink``
with the worker's node as destination. The workers run a plain prefork pool (no Celery
``--autoscale``, whose own loop would fight this one). Growth is at once; a shrink waits until
the lower demand has lasted ``hold_s`` (``core.scaling.next_size``). A shrink never kills a
running stage: billiard's ``shrink`` ends idle processes only and refuses when all are busy,
and a refused or unanswered command leaves the size as it was (logged, tried next tick).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from orchestrator.core.scaling import next_size

log = logging.getLogger(__name__)

#: What a tick reads: worker type -> the report's figures (``engine.scaling.report``).
Report = Callable[[], dict[str, dict[str, Any]]]


@dataclass
class PoolSizer:
    """Pool sizes of the fleet's worker processes, kept at the report's desired workers."""

    app: Celery
    report: Report
    #: Worker type -> the node name of its worker process.
    nodes: dict[str, str]
    #: Worker type -> processes its pool has now (as last set).
    sizes: dict[str, int]
    hold_s: float = 60.0
    #: Seconds between ticks (the report is rebuilt for each).
    interval_s: float = 15.0
    timeout_s: float = 2.0
    _low_since: dict[str, int | None] = field(default_factory=dict)
    _next_tick: float = 0.0

    def due(self) -> bool:
        """True once per ``interval_s`` (the caller's loop runs every second)."""
        now = time.monotonic()
        if now < self._next_tick:
            return False
        self._next_tick = now + self.interval_s
        return True

    def tick(self, now_ms: int | None = None) -> list[str]:
        """One pass over every worker type; returns what changed (lines for the operator)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        changes = []
        for worker, figures in self.report().items():
            if worker not in self.nodes:
                continue
            current = self.sizes.get(worker, 1)
            step = next_size(
                current,
                figures["desired_workers"],
                minimum=max(1, figures["min_workers"]),  # a running worker keeps one process
                maximum=max(1, figures["max_workers"]),
                low_since_ms=self._low_since.get(worker),
                now_ms=now,
                hold_ms=int(self.hold_s * 1000),
            )
            self._low_since[worker] = step.low_since_ms
            if step.size != current and self._resize(worker, step.size - current):
                self.sizes[worker] = step.size
                changes.append(
                    f"{worker}: {current} -> {step.size} processes ({figures['reason']})"
                )
        return changes

    def forget(self, worker: str, size: int) -> None:
        """The worker's process was restarted with ``size`` processes."""
        self.sizes[worker] = size
        self._low_since.pop(worker, None)

    def _resize(self, worker: str, delta: int) -> bool:
        """Send pool_grow / pool_shrink; False (logged) if the worker did not do it."""
        command = self.app.control.pool_grow if delta > 0 else self.app.control.pool_shrink
        node = self.nodes[worker]
        replies = command(abs(delta), destination=[node], reply=True, timeout=self.timeout_s)
        answer = next((r[node] for r in replies or [] if node in r), None)
        if answer is None:
            log.warning("%s did not answer %s; skipped", node, command.__name__)
            return False
        if "error" in answer:  # e.g. every process busy: nothing is killed, try next tick
            log.info("%s refused %s(%d): %s", node, command.__name__, abs(delta), answer["error"])
            return False
        return True

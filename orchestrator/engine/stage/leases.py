"""Capacity-slot and run leases, kept alive while a stage works in this process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.runtime import Runtime

log = logging.getLogger(__name__)

#: A stage still at work this long after it took its slot has its start written from here.
ANNOUNCE_AFTER_S = 0.02


@dataclass
class _Held:
    runtime: Runtime
    worker: str
    execution_id: str
    renew_at: float  # monotonic s
    announce: Callable[[], None] | None  # the stage's deferred start, until written
    announce_at: float

    def next_at(self) -> float:
        return min(self.renew_at, self.announce_at) if self.announce else self.renew_at


class LeaseKeeper:
    """Renews a running stage's capacity slot and its run's lease while the stage works.

    If the worker dies, the renewals stop and both leases lapse within their TTL: that is
    how the reconciler tells a dead stage from a slow one. One daemon thread per process
    renews every stage it runs (starting a thread per stage cost more than a no-op stage).

    ``announce`` is the stage's start (its running record and event), which the stage defers
    so that one that ends at once writes start and end in one round trip; a stage still at
    work ``ANNOUNCE_AFTER_S`` after it entered is announced from here.
    """

    _wake = threading.Condition()
    _held: dict[str, _Held] = {}
    _thread: threading.Thread | None = None
    _sleeping_until = 0.0

    def __init__(
        self,
        runtime: Runtime,
        worker: str,
        holder: str,
        execution_id: str,
        announce: Callable[[], None] | None = None,
    ) -> None:
        self._holder = holder
        now = time.monotonic()
        renew_at = now + runtime.admission.lease_ttl_ms / 3000
        self._entry = _Held(
            runtime, worker, execution_id, renew_at, announce, now + ANNOUNCE_AFTER_S
        )

    def __enter__(self) -> LeaseKeeper:
        cls = type(self)
        with cls._wake:
            cls._held[self._holder] = self._entry
            if cls._thread is None or not cls._thread.is_alive():  # none yet, or forked
                cls._sleeping_until = 0.0
                cls._thread = threading.Thread(target=cls._keep, name="leases", daemon=True)
                cls._thread.start()
            elif self._entry.next_at() < cls._sleeping_until:
                cls._wake.notify()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._wake:
            self._held.pop(self._holder, None)

    @classmethod
    def _keep(cls) -> None:
        while True:
            with cls._wake:
                now = time.monotonic()
                wake_at = min((e.next_at() for e in cls._held.values()), default=now + 60)
                if wake_at > now:
                    cls._sleeping_until = wake_at
                    cls._wake.wait(wake_at - now)
                    continue
                due = [(h, e) for h, e in cls._held.items() if e.next_at() <= now]
            for holder, entry in due:
                try:
                    if entry.announce is not None and entry.announce_at <= now:
                        announce, entry.announce = entry.announce, None
                        announce()
                    if entry.renew_at <= now:
                        entry.renew_at = now + entry.runtime.admission.lease_ttl_ms / 3000
                        entry.runtime.admission.renew_slot(entry.worker, holder)
                        entry.runtime.admission.renew(entry.execution_id)
                except Exception as exc:  # Redis blips must not kill the stage
                    log.warning("lease renewal for %s failed: %s", holder, exc)

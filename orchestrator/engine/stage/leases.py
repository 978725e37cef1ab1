"""Capacity-slot and run leases, kept alive while a stage works in this process."""

from __future__ import annotations

import logging
import threading
import time

from orchestrator.runtime import Runtime

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews a running stage's capacity slot and its run's lease while the stage works.

    If the worker dies, the renewals stop and both leases lapse within their TTL: that is
    how the reconciler tells a dead stage from a slow one. One daemon thread per process
    renews every stage it runs (starting a thread per stage cost more than a no-op stage).
    """

    _lock = threading.Lock()
    #: holder -> (runtime, worker type, execution id, when its renewal is due, monotonic s)
    _held: dict[str, tuple[Runtime, str, str, float]] = {}
    _thread: threading.Thread | None = None
    TICK_S = 0.25

    def __init__(self, runtime: Runtime, worker: str, holder: str, execution_id: str) -> None:
        self._entry = (runtime, worker, execution_id)
        self._holder = holder

    def __enter__(self) -> LeaseKeeper:
        cls = type(self)
        runtime = self._entry[0]
        due = time.monotonic() + runtime.admission.lease_ttl_ms / 3000
        with cls._lock:
            cls._held[self._holder] = (*self._entry, due)
            if cls._thread is None or not cls._thread.is_alive():  # none yet, or forked
                cls._thread = threading.Thread(target=cls._renew, name="leases", daemon=True)
                cls._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._held.pop(self._holder, None)

    @classmethod
    def _renew(cls) -> None:
        while True:
            time.sleep(cls.TICK_S)
            now = time.monotonic()
            with cls._lock:
                due = [(h, entry) for h, entry in cls._held.items() if entry[3] <= now]
            for holder, (runtime, worker, execution_id, _) in due:
                admission = runtime.admission
                try:
                    admission.renew_slot(worker, holder)
                    admission.renew(execution_id)
                except Exception as exc:  # Redis blips must not kill the stage
                    log.warning("lease renewal for %s failed: %s", holder, exc)
                with cls._lock:
                    if holder in cls._held:
                        every = admission.lease_ttl_ms / 3000
                        cls._held[holder] = (runtime, worker, execution_id, now + every)

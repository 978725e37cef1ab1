"""Stage metrics, counted where the work happens: in the worker process that runs the stage.

Why prometheus_client's multiprocess mode: a Celery worker runs stages in prefork children and
the API in several gunicorn workers, each with its own memory. With ``PROMETHEUS_MULTIPROC_DIR``
set, every process writes its counters and histograms to memory-mapped files in that directory
and a scrape sums the files of every process, alive or dead (``MultiProcessCollector``), so a
child recycled by Celery loses no count. The page is served by the API (``GET /metrics``) and,
with ``ORCH_METRICS_PORT``, by each worker's main process (``serve_worker_metrics``): one
directory per host or container, one scrape target per directory. Increments are in-process
(a file write, no Redis round trip): the stage runner's hot path stays as it was.

Metrics are made on first use, not at import (nothing happens at import time), and only
counters and histograms are used, whose multiprocess sums are exact.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

#: Stage durations span milliseconds (a cached echo) to the 15-minute stage limit.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)


def multiprocess_mode() -> bool:
    """True when this process's metric values live in ``PROMETHEUS_MULTIPROC_DIR`` files
    (prometheus_client decides once, when it is first imported)."""
    return values.ValueClass is not values.MutexValue


@dataclass(frozen=True)
class StageMetrics:
    duration: Histogram
    retries: Counter
    cache_hits: Counter
    units: Counter
    cost: Counter
    handshake_bytes: Counter


_lock = threading.Lock()


def stage_metrics() -> StageMetrics:
    """The stage metrics of this process (registered in the default registry, which a
    single-process exporter serves; in multiprocess mode the files are what counts). Made
    once under a lock: two threads of a pool starting their first stages together would
    otherwise both register them, and the second would fail."""
    with _lock:
        return _make()


@functools.cache
def _make() -> StageMetrics:
    kinds = ["worker_type", "action"]
    return StageMetrics(
        duration=Histogram(
            "orchestrator_stage_duration_seconds",
            "Time a stage attempt ran, from its capacity slot to its packet",
            [*kinds, "outcome"],
            buckets=DURATION_BUCKETS,
        ),
        retries=Counter(
            "orchestrator_stage_retries", "Stage attempts that failed and were retried", kinds
        ),
        cache_hits=Counter(
            "orchestrator_stage_cache_hits", "Stages answered from the result cache", kinds
        ),
        units=Counter(
            "orchestrator_resource_units_used",
            "Units of a resource stages used (settled)",
            ["resource", "worker_type"],
        ),
        cost=Counter(
            "orchestrator_resource_cost_usd",
            "What stages' use of a resource cost, in US dollars",
            ["resource", "worker_type"],
        ),
        handshake_bytes=Counter(
            "orchestrator_handshake_bytes",
            "Bytes of stage data moved by reference: outputs written, inputs read",
            ["worker_type", "direction"],
        ),
    )


def exposition_registry(metrics_dir: Path | None) -> CollectorRegistry:
    """A registry for one scrape page: the sum of every process's files in ``metrics_dir``."""
    registry = CollectorRegistry()
    if metrics_dir is not None:
        MultiProcessCollector(registry, path=str(metrics_dir))
    return registry


def serve_worker_metrics(port: int, metrics_dir: Path | None) -> Any:
    """Serve the summed metrics of ``metrics_dir`` on ``port`` from a daemon thread of the
    worker's main process (its prefork children write, the parent serves)."""
    from prometheus_client import start_http_server

    return start_http_server(port, registry=exposition_registry(metrics_dir))

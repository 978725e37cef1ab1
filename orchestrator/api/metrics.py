"""Prometheus metrics: request counters and latencies, plus the pool and runs at scrape time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from orchestrator.db import PipelineExecution
from orchestrator.engine import scaling
from orchestrator.engine.estimates import accuracy
from orchestrator.engine.housekeeping import usage as storage_usage
from orchestrator.engine.metrics import exposition_registry, multiprocess_mode

if TYPE_CHECKING:
    from flask import Request, Response

    from orchestrator.api.stream_hub import StreamHub
    from orchestrator.runtime import Runtime

log = logging.getLogger(__name__)


class PoolCollector:
    """Reads the live pool and execution counts when Prometheus scrapes, not before."""

    def __init__(self, runtime: Runtime, hub: StreamHub) -> None:
        self.runtime = runtime
        self.hub = hub

    def collect(self) -> Iterator[Any]:
        executions = GaugeMetricFamily(
            "orchestrator_executions", "Executions by status", labels=["status"]
        )
        with self.runtime.db.session() as session:
            for status, count in session.execute(
                select(PipelineExecution.status, func.count()).group_by(PipelineExecution.status)
            ):
                executions.add_metric([status], count)
        yield executions
        snapshot = self.runtime.admission.snapshot()
        used = GaugeMetricFamily(
            "orchestrator_quota_used",
            "Units used in the current window",
            labels=["resource", "window"],
        )
        limit = GaugeMetricFamily(
            "orchestrator_quota_limit", "Limit of the window", labels=["resource", "window"]
        )
        reserved = GaugeMetricFamily(
            "orchestrator_quota_reserved", "Units held by live runs", labels=["resource"]
        )
        for name, state in snapshot["resources"].items():
            for window, used_key, limit_key in (
                ("day", "used_today", "daily_limit"),
                ("month", "used_this_month", "monthly_limit"),
            ):
                used.add_metric([name, window], state[used_key])
                if state[limit_key]:
                    limit.add_metric([name, window], state[limit_key])
            reserved.add_metric([name], state["reserved"])
        yield from (used, limit, reserved)
        active = GaugeMetricFamily(
            "orchestrator_worker_slots_active", "Stages running", labels=["worker_type"]
        )
        maximum = GaugeMetricFamily(
            "orchestrator_worker_slots_max", "Capacity", labels=["worker_type"]
        )
        for worker, capacity in snapshot["worker_capacity"].items():
            active.add_metric([worker], capacity["active"])
            maximum.add_metric([worker], capacity["max"])
        yield from (active, maximum)
        yield GaugeMetricFamily(
            "orchestrator_pending_runs",
            "Runs waiting for resources",
            value=snapshot["pending_runs"],
        )
        yield GaugeMetricFamily(
            "orchestrator_run_leases", "Live run leases", value=snapshot["leases"]
        )
        yield GaugeMetricFamily(
            "orchestrator_sse_subscribers", "Open progress streams", value=self.hub.subscribers()
        )
        yield from self._storage()
        yield from self._accuracy()
        yield from self._scaling()

    def _storage(self) -> Iterator[Any]:
        """Bytes per tier (object storage as the last housekeeping sweep measured it, Redis's
        ``used_memory`` now) and the ``storage`` limits of resources.yaml."""
        used = GaugeMetricFamily(
            "orchestrator_storage_bytes", "Bytes stored per tier", labels=["tier"]
        )
        limit = GaugeMetricFamily(
            "orchestrator_storage_limit_bytes", "Storage limit per tier", labels=["tier"]
        )
        figures = storage_usage(self.runtime)
        tiers = (("object_storage", "bytes"), ("redis", "used_bytes"))
        for tier, key in tiers:
            if figures[tier][key] is not None:
                used.add_metric([tier], figures[tier][key])
            if figures[tier]["limit_bytes"] is not None:
                limit.add_metric([tier], figures[tier]["limit_bytes"])
        yield from (used, limit)

    def _scaling(self) -> Iterator[Any]:
        """Utilization per worker type and window, and the workers the forecast asks for
        (what KEDA scales on: deploy/keda/scaledobject.yaml)."""
        ratio = GaugeMetricFamily(
            "orchestrator_worker_utilization_ratio",
            "Busy slot-seconds over available slot-seconds",
            labels=["worker_type", "window"],
        )
        desired = GaugeMetricFamily(
            "orchestrator_desired_workers",
            "Workers the forecast and backlog ask for, within min/max and quotas",
            labels=["worker_type"],
        )
        for worker, figures in scaling.report(self.runtime)["worker_types"].items():
            for window, value in figures["utilization"].items():
                if value is not None:
                    ratio.add_metric([worker, window], value)
            desired.add_metric([worker], figures["desired_workers"])
        yield from (ratio, desired)

    def _accuracy(self) -> Iterator[Any]:
        """How good the estimates of the last 100 runs were, per template (the feedback loop
        of ``GET /estimates/accuracy``)."""
        gauges = {
            key: GaugeMetricFamily(name, text, labels=["template"])
            for key, name, text in (
                ("time_median_abs_pct_error", "orchestrator_estimate_time_error_percent",
                 "Median absolute % error of the estimated time (p50)"),
                ("cost_median_abs_pct_error", "orchestrator_estimate_cost_error_percent",
                 "Median absolute % error of the estimated cost"),
                ("interval_coverage", "orchestrator_estimate_interval_coverage_ratio",
                 "Share of runs whose time fell inside the stated p10-p90 interval"),
                ("within_p90", "orchestrator_estimate_within_p90_ratio",
                 "Share of runs that finished within the stated p90"),
            )
        }  # fmt: skip
        for template, figures in accuracy(self.runtime, last=100)["templates"].items():
            for key, gauge in gauges.items():
                if figures[key] is not None:
                    gauge.add_metric([template], figures[key])
        yield from gauges.values()


class GuardedCollector:
    """A scrape during an outage (Redis, the database) answers with what it has, not a 500:
    the families read before the failure, and ``orchestrator_scrape_error`` set to 1."""

    def __init__(self, collector: PoolCollector) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Any]:
        failed = 0
        try:
            yield from self.collector.collect()
        except Exception as error:  # an unreachable dependency: log it, serve the rest
            log.warning("metrics scrape incomplete: %s: %s", type(error).__name__, error)
            failed = 1
        yield GaugeMetricFamily(
            "orchestrator_scrape_error", "1 when a dependency failed during this scrape", failed
        )


class ApiMetrics:
    """One page per app (several apps in tests never collide): this process's HTTP metrics,
    every process's stage and HTTP metrics summed from ``PROMETHEUS_MULTIPROC_DIR`` when set
    (``orchestrator.engine.metrics``), and the pool read at scrape time."""

    def __init__(self, runtime: Runtime, hub: StreamHub) -> None:
        self.registry = exposition_registry(runtime.settings.metrics_dir)
        # In multiprocess mode this process's counts are in the directory the registry sums:
        # registering them as well would count them twice.
        summed = multiprocess_mode() and runtime.settings.metrics_dir is not None
        own = None if summed else self.registry
        self.requests = Counter(
            "orchestrator_http_requests",
            "HTTP requests",
            ["endpoint", "method", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "orchestrator_http_request_duration_seconds",
            "HTTP request latency",
            ["endpoint"],
            registry=own,
        )
        self.registry.register(GuardedCollector(PoolCollector(runtime, hub)))

    def observe(self, request: Request, response: Response, started: float | None) -> None:
        endpoint = request.endpoint or "unknown"
        self.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        if started is not None and endpoint != "executions.progress":
            self.latency.labels(endpoint).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""The Grafana dashboard (deploy/grafana/) queries only what the code exports: every metric
name in its PromQL is a series some ``orchestrator/`` module defines, with the suffixes its
kind gives it (``_total`` for a counter, ``_bucket``/``_sum``/``_count`` for a histogram)."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
METRIC = re.compile(r"\borchestrator_[a-zA-Z0-9_:]*")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}
CONSTRUCTORS = {
    "Counter": "counter",
    "CounterMetricFamily": "counter",
    "Histogram": "histogram",
    "HistogramMetricFamily": "histogram",
    "Gauge": "gauge",
    "GaugeMetricFamily": "gauge",
}


def defined_metrics() -> dict[str, str]:
    """Metric name -> kind, from the modules that use prometheus_client: a name passed
    straight to a constructor has that constructor's kind; any other ``orchestrator_...``
    literal there (names kept in a table and passed to ``GaugeMetricFamily``) is a gauge."""
    found: dict[str, str] = {}
    for path in (ROOT / "orchestrator").rglob("*.py"):
        source = path.read_text()
        if "prometheus_client" not in source:
            continue
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args:
                name = node.func.id if isinstance(node.func, ast.Name) else None
                first = node.args[0]
                if name in CONSTRUCTORS and isinstance(first, ast.Constant):
                    found[str(first.value)] = CONSTRUCTORS[name]
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and METRIC.fullmatch(node.value)
            ):
                found.setdefault(node.value, "gauge")
    return found


def exported_series() -> set[str]:
    return {name + suffix for name, kind in defined_metrics().items() for suffix in SUFFIXES[kind]}


def expressions(node: Any) -> Iterator[str]:
    """Every PromQL expression in a dashboard: panel targets and query variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"expr", "query", "definition"} and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def test_the_code_exports_the_stage_and_storage_metrics() -> None:
    series = exported_series()
    for name in (
        "orchestrator_stage_duration_seconds_bucket",
        "orchestrator_resource_cost_usd_total",
        "orchestrator_storage_bytes",
        "orchestrator_desired_workers",
    ):
        assert name in series


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_metric_a_dashboard_queries_is_exported(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    used = {name for expr in expressions(dashboard) for name in METRIC.findall(expr)}
    assert used, "the dashboard queries no orchestrator metric"
    assert sorted(used - exported_series()) == []


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_has_a_query_on_the_datasource_variable(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert [t["expr"] for t in panel["targets"] if t["expr"]], panel["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("duration", "outcomes", "usd", "utilization", "desired", "estimate", "quota"):
        assert topic in titles, topic


def test_dashboards_are_found() -> None:
    assert DASHBOARDS, "deploy/grafana/*.json is missing"

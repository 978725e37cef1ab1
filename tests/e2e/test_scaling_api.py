"""GET /scaling, utilization in GET /resources and the scaling gauges, on a real API process."""

from __future__ import annotations

from tests.e2e.conftest import Api, Runner


def test_scaling_is_for_monitors(api_server: Api) -> None:
    assert api_server.call("GET", "/scaling", key=None).status_code == 401
    assert api_server.call("GET", "/scaling", key="client").status_code == 403


def test_a_run_shows_as_utilization_and_desired_workers(api_server: Api, runner: Runner) -> None:
    execution, _ = runner.run("linear5", {"start": 4242})  # unseen params: no cache hit
    assert execution.status == "completed"
    pool = api_server.call("GET", "/resources", key="monitor").json()
    summed = pool["utilization"]["sum"]
    assert set(summed) == {"1m", "15m", "1h"} and summed["1m"] > 0
    body = api_server.call("GET", "/scaling", key="monitor").json()
    assert body["horizon_s"] > 0
    for worker, figures in body["worker_types"].items():
        assert figures["min_workers"] <= figures["desired_workers"] <= figures["max_workers"]
        assert set(figures["utilization"]) == {"1m", "15m", "1h"}, worker
    assert body["worker_types"]["sum"]["forecast"]["history_minutes"] >= 1
    metrics = api_server.call("GET", "/metrics", key="monitor").text
    assert 'orchestrator_worker_utilization_ratio{window="1m",worker_type="sum"}' in metrics
    assert 'orchestrator_desired_workers{worker_type="sum"}' in metrics
    spec = api_server.call("GET", "/openapi.json").json()
    assert "/scaling" in spec["paths"]
    assert "WorkerScalingOut" in str(spec["components"]["schemas"])

"""Watching the live stack: stage metrics summed over worker processes, served by the API and
by a worker's own exporter, valid for promtool; JSON logs with the stage bound and no secret."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.api.metrics import ApiMetrics
from orchestrator.api.stream_hub import StreamHub
from orchestrator.db import Database
from orchestrator.ops.supervisor import WorkerFleet, start_worker, wait_ready
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from tests.conftest import ROOT
from tests.e2e.test_api import execute, sse_events
from tests.live import Api, free_port


def samples(page: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def scrape(api: Api) -> str:
    response = api.call("GET", "/metrics", key="monitor")
    assert response.status_code == 200, response.text
    return response.text


def promtool_check(page: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=page, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def run_through_api(api: Api, template: str, parameters: dict[str, Any]) -> str:
    run = execute(api, template, parameters)["execution_id"]
    assert sse_events(api, run)[-1][1]["status"] == "completed"
    return str(run)


def test_stage_metrics_from_worker_processes_are_summed_on_every_page(
    api_server: Api, e2e_settings: Settings, celery_app: Celery
) -> None:
    completed = "orchestrator_stage_duration_seconds_count"
    labels = {"worker_type": "sum", "action": "add", "outcome": "completed"}
    before = scrape(api_server)
    run_through_api(api_server, "linear5", {"start": 7})  # five stages, in prefork children
    after = scrape(api_server)
    # Every stage counted once, though they ran in worker processes and the API scraped.
    assert samples(after, completed, **labels) - samples(before, completed, **labels) == 5
    written = "orchestrator_handshake_bytes_total"
    assert samples(after, written, direction="written") > samples(
        before, written, direction="written"
    )
    assert samples(after, written, direction="read") > samples(before, written, direction="read")
    assert "orchestrator_http_request_duration_seconds_bucket" in after
    assert "orchestrator_http_request_seconds" not in after
    promtool_check(after)

    # A worker's own exporter serves the same sums (its main process; children write).
    port = free_port()
    probe = WorkerFleet(log_dir=e2e_settings.data_dir / "logs")
    start_worker(probe, e2e_settings, "metrics-probe", extra_env={"ORCH_METRICS_PORT": str(port)})
    try:
        wait_ready(celery_app, probe)
        page = ""
        for _ in range(100):  # worker_ready (which starts the server) follows the first ping
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
                break
            except httpx.TransportError:
                wait_ready(celery_app, probe, timeout_s=1)
        assert samples(page, completed, **labels) == samples(after, completed, **labels)
        for name in ("orchestrator_stage_duration_seconds", "orchestrator_handshake_bytes"):
            assert f"# TYPE {name}" in page, name  # (retries, cache, units: once one happens)
        promtool_check(page)
    finally:
        probe.stop()


def test_flower_sees_every_stage_though_task_events_are_off_by_default(
    api_server: Api, celery_app: Celery
) -> None:
    """Task events are off by default (ORCH_TASK_EVENTS) and a monitor that asks, as Flower
    does (its ``enable_events``), gets them from the running workers all the same."""
    assert not celery_app.conf.worker_send_task_events
    assert not celery_app.conf.task_track_started
    seen: list[dict[str, Any]] = []
    with celery_app.connection_for_read() as connection:
        receiver = celery_app.events.Receiver(connection, handlers={"*": seen.append})
        listening = threading.Thread(target=receiver.capture, kwargs={"wakeup": False})
        listening.start()
        try:
            replies = celery_app.control.enable_events(reply=True, timeout=5)
            assert replies, "no worker answered enable_events"
            run = run_through_api(api_server, "linear5", {"start": 3})
        finally:
            celery_app.control.disable_events(reply=True, timeout=5)
            receiver.should_stop = True
            listening.join(10)
    received = {e["uuid"] for e in seen if e["type"] == "task-received" and run in e["kwargs"]}
    succeeded = {e["uuid"] for e in seen if e["type"] == "task-succeeded"}
    assert len(received) >= 5, received  # five stages, then the run's finish
    assert received <= succeeded


def test_a_scrape_during_a_redis_outage_answers_with_what_it_has(
    e2e_settings: Settings, database: Database
) -> None:
    down = "redis://127.0.0.1:1/0"  # nothing listens there
    runtime = Runtime(
        e2e_settings.with_overrides(redis_url=down, broker_url=down, metrics_dir=None)
    )
    page = ApiMetrics(runtime, StreamHub(down)).render().decode()
    assert samples(page, "orchestrator_scrape_error") == 1
    assert "# TYPE orchestrator_executions gauge" in page  # the database still answered
    promtool_check(page)


def test_json_logs_bind_the_stage_and_never_hold_a_secret(
    api_server: Api, e2e_settings: Settings
) -> None:
    run = run_through_api(api_server, "linear5", {"start": 2})
    logs = sorted((e2e_settings.data_dir / "logs").glob("worker-*.log"))
    logs.append(e2e_settings.data_dir / "api.log")
    text = "\n".join(path.read_text(errors="replace") for path in logs)
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    of_run = [r for r in records if r.get("execution_id") == run]
    stage_lines = [r for r in of_run if r.get("stage_id")]
    assert {r["stage_id"] for r in stage_lines} == {"s1", "s2", "s3", "s4", "s5"}
    for record in stage_lines:
        assert record["worker_type"] == "sum" and record["attempt"] >= 1, record
        assert {"time", "level", "logger", "message"} <= record.keys()
    assert any(r.get("worker_type") == "coordinator" for r in of_run)
    # A packet (its data_ref and checksum) is logged at DEBUG only; the workers log INFO.
    assert not [r for r in records if "data_ref" in json.dumps(r)]
    secrets = [*api_server.keys.values(), e2e_settings.s3_secret_key.get_secret_value()]
    leaked = [s for s in secrets if s in text]
    assert not leaked, "a secret reached the logs"


def test_a_log_line_with_undecodable_feed_text_is_still_one_json_line(
    e2e_settings: Settings, tmp_path: Path
) -> None:
    code = (
        "import logging\n"
        "from orchestrator import logs\n"
        "from orchestrator.settings import Settings\n"
        "settings = Settings.from_env()\n"
        "logs.configure(settings)\n"
        "logs.bind(execution_id='e1', stage_id='fetch', worker_type='feed', attempt=2)\n"
        "feed = b'caf\\xe9 \\xff'.decode('utf-8', 'surrogateescape')\n"
        "secret = settings.s3_secret_key.get_secret_value()\n"
        "logging.getLogger('workers.feed').warning('bad feed %s with %s', feed, secret)\n"
    )
    env = {
        "PYTHONPATH": str(ROOT),
        "ORCH_LOG_FORMAT": "json",
        "ORCH_S3_SECRET_KEY": "s3cr3t-value",
        "PATH": "/usr/bin",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, cwd=tmp_path, text=True
    )
    (line,) = result.stderr.splitlines()
    record = json.loads(line)
    assert record["stage_id"] == "fetch" and record["attempt"] == 2
    assert record["level"] == "WARNING" and "caf" in record["message"]
    assert "s3cr3t-value" not in line and "[redacted]" in record["message"]

"""Who may read and say what: the key before the body, no key in a log, a monitor key sees
states and never a client's data, a worker key never speaks for a built-in worker type."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from orchestrator.api.executions import HIDDEN_ERROR
from orchestrator.auth import Scope, create_key
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from tests.e2e.test_api import execute, sse_events
from tests.live import Api


def test_no_key_is_401_before_the_body_is_read(api_server: Api) -> None:
    response = api_server.call(
        "POST", "/execute", key=None, content=b"{bad", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"


def test_deep_json_is_400_not_a_recursion_error(api_server: Api) -> None:
    deep = b'{"template_name": "linear5", "parameters": {"x": ' + b"[" * 2000 + b"]" * 2000 + b"}}"
    response = api_server.call(
        "POST", "/estimate", content=deep, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_request" and "nested deeper than 64" in error["message"]


def _wait_for_line(log: Path, marker: str) -> str:
    """The access-log line holding ``marker``: gunicorn writes it after the response."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text().splitlines() if marker in line]
        if lines:
            return lines[0]
        time.sleep(0.1)
    raise AssertionError(f"no access-log line with {marker} in {log}")


def test_the_dashboard_key_stays_out_of_the_access_log(
    api_server: Api, e2e_settings: Settings
) -> None:
    marker = uuid.uuid4().hex
    key = api_server.keys["monitor"]
    page = api_server.http.get(
        "/dashboard",
        params={"key": key, "probe": marker},
        headers={"Referer": f"{api_server.url}/dashboard?key={key}"},
    )
    # The old ?key= URL only redirects to the bare page (the login form) and sets nothing.
    assert page.status_code == 303 and page.headers["Location"] == "/dashboard"
    assert "set-cookie" not in page.headers
    line = _wait_for_line(e2e_settings.data_dir / "api.log", marker)
    assert "/dashboard?key=[redacted]" in line
    assert key not in (e2e_settings.data_dir / "api.log").read_text()


def test_a_monitor_key_reads_states_but_not_parameters_or_deliverables(api_server: Api) -> None:
    started = execute(api_server, "delivering", {"tokens": 321})
    run = started["execution_id"]
    assert sse_events(api_server, run)[-1][1]["status"] == "completed"

    detail = api_server.call("GET", f"/executions/{run}", key="monitor")
    assert detail.status_code == 200
    body = detail.json()
    assert body["status"] == "completed" and body["parameters"] is None
    assert all(stage["data_reference"] is None for stage in body["stages"])
    listed = api_server.call("GET", "/executions", key="monitor").json()["items"]
    assert all(item["parameters"] is None for item in listed)
    assert run in {item["execution_id"] for item in listed}
    for path in (f"/executions/{run}/deliverables", f"/progress/{run}"):
        refused = api_server.call("GET", path, key="monitor")
        assert refused.status_code == 403, path
        assert refused.json()["error"]["code"] == "forbidden"

    # the client and an admin still read everything
    assert api_server.call("GET", f"/executions/{run}").json()["parameters"] == {"tokens": 321}
    files = api_server.call("GET", f"/executions/{run}/deliverables", key="admin")
    assert files.status_code == 200 and files.json()["deliverables"]


def test_a_worker_key_cannot_heartbeat_or_register_a_builtin_worker_type(
    api_server: Api, runtime: Runtime
) -> None:
    api_server.call("GET", "/workers", key="monitor")  # the registry rows of built-in types
    for builtin in ("feed_fetcher", "echo"):  # deployed, and test-only (no registry row)
        key = create_key(runtime.db, Scope.WORKER, client_id=builtin)
        headers = {"Authorization": f"Bearer {key}", "X-Worker-ID": builtin}
        beat = api_server.http.post(
            "/workers/heartbeat", headers=headers, json={"status": "unhealthy"}
        )
        assert beat.status_code == 403, beat.text
        register = api_server.http.post(
            "/workers/register", headers=headers, json={"worker_name": builtin}
        )
        assert register.status_code == 403, register.text
    workers = api_server.call("GET", "/workers", key="monitor").json()["workers"]
    health = {w["worker_name"]: (w["health_status"], w["origin"]) for w in workers}
    assert health["feed_fetcher"][0] != "unhealthy" and health["feed_fetcher"][1] == "internal"
    assert "echo" not in health


def test_a_monitor_key_sees_that_a_run_failed_but_not_its_messages(api_server: Api) -> None:
    secret = f"SECRET-{uuid.uuid4().hex[:8]}"
    started = execute(api_server, "failing", {"message": secret})
    run = started["execution_id"]
    assert sse_events(api_server, run)[-1][1]["status"] == "failed"
    detail = api_server.call("GET", f"/executions/{run}", key="monitor")
    listed = api_server.call("GET", "/executions", key="monitor")
    assert secret not in detail.text and secret not in listed.text
    body = detail.json()
    assert body["status"] == "failed" and body["error"] == HIDDEN_ERROR
    broken = next(s for s in body["stages"] if s["stage"] == "broken")
    assert broken["status"] == "failed" and broken["error"] == HIDDEN_ERROR
    assert secret in api_server.call("GET", f"/executions/{run}").text  # its client reads it

"""The HTTP API as a client sees it: a real ``orchestrator api`` process (gunicorn + gevent)."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import httpx
import pytest

from orchestrator.engine.events import stream_key
from orchestrator.runtime import Runtime
from tests.e2e.conftest import Api


def sse_events(
    api: Api,
    execution_id: str,
    last_event_id: str | None = None,
    key: str = "client",
    stop_after: int | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    headers = {"Authorization": f"Bearer {api.keys[key]}"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream(
        "GET", f"{api.url}/progress/{execution_id}", headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event_id = None
        for line in response.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                events.append((event_id or "", json.loads(line[6:])))
                if stop_after is not None and len(events) >= stop_after:
                    break
    return events


def execute(
    api: Api,
    template: str,
    parameters: dict[str, Any] | None = None,
    request_id: str | None = None,
    key: str = "client",
) -> dict[str, Any]:
    response = api.call(
        "POST",
        "/execute",
        key=key,
        json={
            "request_id": request_id or uuid.uuid4().hex,
            "template_name": template,
            "parameters": parameters or {},
            "priority": "high",
        },
    )
    assert response.status_code == 202, response.text
    return response.json()


def test_health_needs_no_key_and_reports_each_dependency_to_a_monitor_key(api_server: Api) -> None:
    assert api_server.call("GET", "/health", key=None).json() == {"status": "ok"}
    body = api_server.call("GET", "/health", key="monitor").json()
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"redis", "broker", "database", "object_storage"}


@pytest.mark.parametrize(
    ("method", "path", "key", "status"),
    [
        ("GET", "/executions", None, 401),
        ("GET", "/templates", None, 401),
        ("GET", "/metrics", None, 401),
        ("GET", "/resources", "client", 403),
        ("GET", "/workers", "client", 403),
        ("GET", "/metrics", "client", 403),
        ("GET", "/executions", "monitor", 200),
        ("GET", "/resources", "monitor", 200),
        ("POST", "/execute", "monitor", 403),
        ("PUT", "/templates/linear5", "client", 403),
        ("POST", "/workers/heartbeat", "client", 403),
        ("GET", "/executions", "admin", 200),
    ],
)
def test_auth_matrix(api_server: Api, method: str, path: str, key: str | None, status: int) -> None:
    body = {"request_id": "x", "template_name": "linear5"} if path == "/execute" else None
    if path.startswith("/templates/"):
        body = {"yaml": "name: linear5"}
    if path == "/workers/heartbeat":
        body = {}
    response = api_server.call(method, path, key=key, json=body)
    assert response.status_code == status, response.text
    if status >= 400:
        assert set(response.json()["error"]) == {"code", "message", "details"}


def test_bad_key_is_401(api_server: Api) -> None:
    response = api_server.http.get("/executions", headers={"Authorization": "Bearer orch_nope"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    response = api_server.http.get("/executions", headers={"Authorization": "Basic abc"})
    assert response.status_code == 401


def test_estimate(api_server: Api) -> None:
    body = api_server.call(
        "POST", "/estimate", json={"template_name": "delivering", "parameters": {"tokens": 10}}
    ).json()
    assert body["feasible"] is True
    # No history of this template yet: its hint is the median of a wide interval, plus the
    # engine's own overhead.
    times = body["time_ms"]
    assert times["p10"] < 200 < times["p90"] and body["estimated_time_ms"] == times["p50"]
    assert body["breakdown"][0]["stage"] == "write"
    # No LLM is configured here: openai_api (needs: llm) is neither reserved nor priced, and
    # the stage is said to run its offline method.
    assert body["estimated_cost_usd"] == 0 and body["cost_usd"] == {"expected": 0, "p90": 0}
    assert body["breakdown"][0]["method"] == "offline"
    assert body["resource_availability"]["openai_api"] == "not used: needs llm"
    assert 0 < body["confidence"] <= 1 and body["confidence_runs"] >= 0


def test_execute_follow_inspect_and_download(api_server: Api) -> None:
    request_id = uuid.uuid4().hex
    started = execute(api_server, "delivering", {"tokens": 1234}, request_id=request_id)
    again = execute(api_server, "delivering", {"tokens": 1234}, request_id=request_id)
    assert again["execution_id"] == started["execution_id"]
    assert started["progress_url"] == f"/progress/{started['execution_id']}"
    events = sse_events(api_server, started["execution_id"])
    assert events[-1][1]["type"] == "final" and events[-1][1]["status"] == "completed"
    assert any(e["stage"] == "write" and e["status"] == "completed" for _, e in events)
    detail = api_server.call("GET", f"/executions/{started['execution_id']}").json()
    assert detail["status"] == "completed" and detail["client_id"] == "acme"
    stage = detail["stages"][0]
    assert stage["status"] == "completed" and stage["summary"]["continue"] is True
    assert detail["total_cost_usd"] == pytest.approx(1234 * 0.0000006)
    listed = api_server.call("GET", "/executions", params={"template": "delivering"}).json()
    assert started["execution_id"] in [e["execution_id"] for e in listed["items"]]
    files = api_server.call("GET", f"/executions/{started['execution_id']}/deliverables").json()
    report = files["deliverables"][0]
    assert report["name"] == "report.md" and report["content_type"] == "text/markdown"
    assert httpx.get(report["url"]).text == "# Report of write\n"
    # another client cannot see it
    hidden = api_server.call("GET", f"/executions/{started['execution_id']}", key="other")
    assert hidden.status_code == 404
    assert (
        api_server.call(
            "POST", f"/executions/{started['execution_id']}/cancel", key="other"
        ).status_code
        == 404
    )


def test_cancel_releases_everything_and_twice_is_a_conflict(api_server: Api) -> None:
    started = execute(api_server, "slow", {"seconds": 4})
    first = sse_events(api_server, started["execution_id"], stop_after=3)
    assert first
    for action in ("cancel", "resume"):  # a body they would ignore is refused, not dropped
        ignored = api_server.call(
            "POST",
            f"/executions/{started['execution_id']}/{action}",
            json={"parameters": {"seconds": 1}},
        )
        assert ignored.status_code == 422, ignored.text
        assert ignored.json()["error"]["message"].startswith(f"body: {action} takes no body")
    cancelled = api_server.call("POST", f"/executions/{started['execution_id']}/cancel", json={})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = api_server.call("POST", f"/executions/{started['execution_id']}/cancel")
    assert again.status_code == 409
    pool = api_server.call("GET", "/resources", key="monitor").json()
    assert pool["leases"] == 0
    assert pool["worker_capacity"].get("sleep", {"active": 0})["active"] == 0


def test_templates_registry(api_server: Api) -> None:
    listed = api_server.call("GET", "/templates").json()["templates"]
    assert "linear5" in {t["name"] for t in listed}
    one = api_server.call("GET", "/templates/linear5").json()
    assert one["definition"]["stages"][0]["id"] == "s1"
    assert api_server.call("GET", "/templates/nope").status_code == 404
    name = f"t_{uuid.uuid4().hex[:8]}"
    text = f"name: {name}\nstages:\n  - {{id: a, worker: echo, action: say}}\n"
    created = api_server.call("PUT", f"/templates/{name}", key="admin", json={"yaml": text})
    assert created.status_code == 201 and created.json()["version"] == 1
    same = api_server.call("PUT", f"/templates/{name}", key="admin", json={"yaml": text})
    assert same.status_code == 200 and same.json() == {"name": name, "version": 1, "created": False}
    changed = api_server.call(
        "PUT", f"/templates/{name}", key="admin", json={"yaml": text + "description: v2\n"}
    )
    assert changed.json()["version"] == 2
    bad = api_server.call(
        "PUT",
        f"/templates/{name}",
        key="admin",
        json={"yaml": f"name: {name}\nstages:\n  - {{id: a, worker: nobody, action: say}}\n"},
    )
    assert bad.status_code == 422
    assert "stages[0].worker: unknown worker type 'nobody'" in bad.json()["error"]["message"]


def test_workers_registry_and_external_workers(api_server: Api) -> None:
    workers = api_server.call("GET", "/workers", key="monitor").json()["workers"]
    names = {w["worker_name"] for w in workers}
    assert {"topic_researcher", "feed_fetcher", "report_builder"} <= names
    assert not names & {"echo", "sum", "sleep"}  # test-only types are not deployed
    me = {"X-Worker-ID": "external_summariser"}
    registered = api_server.call(
        "POST",
        "/workers/register",
        key="worker",
        headers=me,
        json={"worker_name": "external_summariser", "capabilities": ["summarise"]},
    )
    assert registered.status_code == 200, registered.text
    assert registered.json()["origin"] == "external"
    beat = api_server.call(
        "POST", "/workers/heartbeat", key="worker", headers=me, json={"status": "degraded"}
    )
    assert beat.json() == {"ok": True, "status": "degraded"}
    impostor = api_server.call(
        "POST", "/workers/heartbeat", key="worker", headers={"X-Worker-ID": "echo"}, json={}
    )
    assert impostor.status_code == 403
    spoof = api_server.call(
        "POST", "/workers/register", key="worker", headers=me, json={"worker_name": "someone_else"}
    )
    assert spoof.status_code == 403


def test_resources_metrics_openapi_dashboard(api_server: Api) -> None:
    pool = api_server.call("GET", "/resources", key="monitor").json()
    assert pool["resources"]["openai_api"]["daily_limit"] == 200000
    assert "object_storage" in pool["storage"]
    metrics = api_server.call("GET", "/metrics", key="monitor")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "orchestrator_quota_limit{" in metrics.text
    assert "orchestrator_http_requests_total" in metrics.text
    spec = api_server.call("GET", "/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert "/execute" in spec["paths"] and "/executions/{execution_id}" in spec["paths"]
    page = api_server.call("GET", "/dashboard", key="monitor")
    assert page.status_code == 200 and "<title>Orchestrator dashboard</title>" in page.text


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/execute", b"{not json", 400, "bad_request"),
        ("POST", "/estimate", b"[1, 2", 400, "bad_request"),
        (
            "POST",
            "/execute",
            {"request_id": 5, "template_name": "linear5"},
            422,
            "validation_failed",
        ),
        (
            "POST",
            "/execute",
            {"request_id": "r", "template_name": "linear5", "priority": "urgent"},
            422,
            "validation_failed",
        ),
        ("POST", "/execute", {"request_id": "r2", "template_name": "missing"}, 404, "not_found"),
        (
            "POST",
            "/estimate",
            {"template_name": "linear5", "parameters": {"start": "one"}},
            422,
            "validation_failed",
        ),
        (
            "POST",
            "/estimate",
            {"template_name": "linear5", "parameters": {"bogus": 1}},
            422,
            "validation_failed",
        ),
        ("POST", "/estimate", {"template_name": "linear5", "extra": 1}, 422, "validation_failed"),
        ("GET", "/executions/exec_missing", None, 404, "not_found"),
        ("GET", "/executions?limit=0", None, 422, "validation_failed"),
        ("POST", "/executions/exec_missing/resume", None, 404, "not_found"),
        ("GET", "/no/such/route", None, 404, "not_found"),
        ("DELETE", "/execute", None, 405, "method_not_allowed"),
    ],
)
def test_bad_input_is_a_4xx_json_error(
    api_server: Api, method: str, path: str, body: Any, status: int, code: str
) -> None:
    kwargs: dict[str, Any] = (
        {"content": body, "headers": {"Content-Type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    response = api_server.call(method, path, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_oversize_body_is_413(api_server: Api) -> None:
    huge = {"template_name": "linear5", "parameters": {"x": "a" * 2_000_000}}
    response = api_server.call("POST", "/estimate", json=huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_entity_too_large"


def test_two_hundred_subscribers_each_get_every_event_and_reconnects_lose_nothing(
    api_server: Api,
) -> None:
    started = execute(api_server, "slow", {"seconds": 1})
    results: list[list[tuple[str, dict[str, Any]]]] = []
    lock = threading.Lock()

    def subscribe() -> None:
        events = sse_events(api_server, started["execution_id"])
        with lock:
            results.append(events)

    threads = [threading.Thread(target=subscribe) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 200
    reference = [event_id for event_id, _ in results[0]]
    assert results[0][-1][1]["type"] == "final"
    differing = [events for events in results if [i for i, _ in events] != reference]
    assert not differing, f"{len(differing)} subscribers saw other events"
    # a client that dropped after 5 events and reconnects gets exactly the rest
    cut = reference[4]
    rest = sse_events(api_server, started["execution_id"], last_event_id=cut)
    assert [event_id for event_id, _ in rest] == reference[5:]


def test_a_stream_with_nothing_more_to_say_ends(api_server: Api, runtime: Runtime) -> None:
    """A reconnect after the final event (or past it) is 204, which stops an EventSource
    from reconnecting; a run whose events expired still ends its stream, with its row's
    final event."""
    started = execute(api_server, "slow", {"seconds": 0})
    events = sse_events(api_server, started["execution_id"])
    final_id, final = events[-1]
    assert final["type"] == "final"
    auth = {"Authorization": f"Bearer {api_server.keys['client']}"}
    for cursor in (final_id, "99999999999999-0"):
        response = httpx.get(
            f"{api_server.url}/progress/{started['execution_id']}",
            headers={**auth, "Last-Event-ID": cursor},
            timeout=10,
        )
        assert response.status_code == 204, (cursor, response.text)
    runtime.redis.delete(stream_key(started["execution_id"]))  # as after its 7 days
    expired = sse_events(api_server, started["execution_id"])
    assert len(expired) == 1
    assert {k: expired[0][1][k] for k in ("type", "status")} == {
        "type": "final",
        "status": "completed",
    }

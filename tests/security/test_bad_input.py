"""Every bad input is a 4xx with the SPEC's error body, never a 500 or a run that fails later."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from orchestrator.errors import ValidationFailed
from orchestrator.template_registry import parse_yaml
from tests.e2e.test_api import execute
from tests.live import Api

JSON = {"Content-Type": "application/json"}


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    return error


def test_same_request_id_with_another_body_is_a_conflict(api_server: Api) -> None:
    request_id = uuid.uuid4().hex
    first = execute(api_server, "delivering", {"tokens": 10}, request_id=request_id)
    again = execute(api_server, "delivering", {"tokens": 10}, request_id=request_id)
    # The same run (its status may have moved on since: the answer says where it is now).
    assert again["execution_id"] == first["execution_id"]
    assert again["progress_url"] == first["progress_url"]
    for changed in (
        {"template_name": "delivering", "parameters": {"tokens": 11}, "priority": "high"},
        {"template_name": "linear5", "parameters": {}, "priority": "high"},
        {"template_name": "delivering", "parameters": {"tokens": 10}, "priority": "low"},
    ):
        response = api_server.call("POST", "/execute", json={"request_id": request_id, **changed})
        error = _error(response, 409)
        assert error["code"] == "conflict" and request_id in error["message"]
        assert error["details"]["execution_id"] == first["execution_id"]


@pytest.mark.parametrize("last_event_id", ["abc", "1-x", "99999999999999999999999-0", "-"])
def test_a_malformed_last_event_id_is_400(api_server: Api, last_event_id: str) -> None:
    started = execute(api_server, "delivering", {"tokens": 5})
    response = api_server.call(
        "GET", f"/progress/{started['execution_id']}", headers={"Last-Event-ID": last_event_id}
    )
    assert _error(response, 400)["code"] == "bad_request"


@pytest.mark.parametrize(
    ("path", "field"),
    [("/executions?offset=10**23", "offset"), ("/templates/linear5?version=10**23", "version")],
)
def test_huge_numbers_in_the_query_are_422_naming_the_field(
    api_server: Api, path: str, field: str
) -> None:
    # Refused by the query's model, before a database sees them: SQLite raised OverflowError.
    error = _error(api_server.call("GET", path.replace("10**23", str(10**23))), 422)
    assert error["code"] == "validation_failed"
    assert [problem["where"] for problem in error["details"]] == [field]


@pytest.mark.parametrize("path", ["/estimate", "/execute"])
def test_a_lone_surrogate_in_a_parameter_is_422(api_server: Api, path: str) -> None:
    body = b'{"template_name": "failing", "parameters": {"message": "\\ud800"}}'
    if path == "/execute":
        body = body.replace(b"{", b'{"request_id": "%s", ' % uuid.uuid4().hex.encode(), 1)
    error = _error(api_server.call("POST", path, content=body, headers=JSON), 422)
    assert error["message"] == (
        "body.parameters.message: text with a lone surrogate is not valid Unicode"
    )


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_numbers_in_a_body_are_422(api_server: Api, number: bytes) -> None:
    body = b'{"template_name": "durable", "parameters": {"seconds": %s}}' % number
    response = api_server.call("POST", "/estimate", content=body, headers=JSON)
    assert _error(response, 422)["code"] == "validation_failed"


def _stage(index: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"s{index}", "worker": "echo", "action": "say", **extra}


def _put(api: Api, name: str, **body: Any) -> httpx.Response:
    return api.call("PUT", f"/templates/{name}", key="admin", **body)


def test_nan_in_a_template_is_422_and_estimates_stay_json(api_server: Api) -> None:
    name = f"nan_{uuid.uuid4().hex[:8]}"
    stage = "{id: a, worker: echo, action: say, %s}"
    for field, where in (
        ("resources: {x: .nan}", "stages[0].resources.x"),
        ("params: {v: .inf}", "stages[0].params.v: inf is not a finite number"),
    ):
        text = f"name: {name}\nstages:\n  - {stage % field}\n"
        assert where in _error(_put(api_server, name, json={"yaml": text}), 422)["message"]
    body = (
        b'{"definition": {"name": "%s", "stages": [{"id": "a", "worker": "echo", ' % name.encode()
    )
    body += b'"action": "say", "estimate": {"cost_usd": NaN}}]}}'
    _error(_put(api_server, name, content=body, headers=JSON), 422)
    assert api_server.call("GET", f"/templates/{name}").status_code == 404


def test_a_thousand_stages_listed_last_first_are_checked_without_recursion(
    api_server: Api,
) -> None:
    name = f"long_{uuid.uuid4().hex[:8]}"
    stages = [_stage(i, depends_on=[f"s{i + 1}"] if i < 999 else []) for i in range(1000)]
    put = _put(api_server, name, json={"definition": {"name": name, "stages": stages}})
    assert put.status_code == 201, put.text
    estimate = api_server.call("POST", "/estimate", json={"template_name": name})
    assert estimate.status_code == 200, estimate.text
    chain = estimate.json()  # a chain takes all its stages' time, whatever the listed order
    assert chain["estimated_time_ms"] > 100 * max(stage["time_ms"] for stage in chain["breakdown"])
    stages[-1]["depends_on"] = ["s0"]
    cyclic = _put(api_server, name, json={"definition": {"name": name, "stages": stages}})
    assert "dependency cycle: s0 -> s1 -> s2" in _error(cyclic, 422)["message"]


BOMB = """name: bomb
stages:
  - id: s
    worker: echo
    action: say
    params:
      a: &a [x, x, x, x, x, x, x, x, x]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]
"""


def test_yaml_aliases_are_refused_before_anything_expands(api_server: Api) -> None:
    response = api_server.call("PUT", "/templates/bomb", key="admin", json={"yaml": BOMB})
    error = _error(response, 422)
    assert error["message"] == (
        "bomb:8: invalid YAML: aliases (*a) are not allowed in templates; write the value out"
    )
    assert api_server.call("GET", "/templates/bomb").status_code == 404


def test_template_files_refuse_aliases_too() -> None:
    with pytest.raises(ValidationFailed, match=r"bomb.yaml:8: .*aliases \(\*a\)"):
        parse_yaml(BOMB, source="bomb.yaml")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_json_sent_as_another_content_type_is_400_naming_the_header(
    api_server: Api, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = b'{"template_name": "linear5", "parameters": {}}'
    response = api_server.call("POST", "/estimate", content=body, headers=headers)
    error = _error(response, 400)
    assert error["message"].startswith("send the body as JSON with Content-Type: application/json")
    assert error["details"] == {"header": "Content-Type"}


@pytest.mark.parametrize("body", [b'"hello"', b"[1, 2]", b"42", b"null"])
def test_a_body_that_is_not_a_json_object_is_422(api_server: Api, body: bytes) -> None:
    error = _error(api_server.call("POST", "/estimate", content=body, headers=JSON), 422)
    assert error["message"] == "body: must be a JSON object"


def test_a_boolean_is_no_number_in_a_template(api_server: Api) -> None:
    name = f"bool_{uuid.uuid4().hex[:8]}"
    for field in ({"shards": True}, {"timeout_s": True}):
        definition = {"name": name, "stages": [_stage(0, **field)]}
        error = _error(_put(api_server, name, json={"definition": definition}), 422)
        assert error["message"].startswith(f"stages[0].{next(iter(field))}")

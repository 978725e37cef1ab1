"""schemathesis against the served /openapi.json: no 5xx, no response that breaks the schema."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.e2e.conftest import Api


@pytest.fixture(scope="session")
def api_schema(api_server: Api) -> schemathesis.schemas.BaseSchema:
    headers = {"Authorization": f"Bearer {api_server.keys['admin']}"}
    document = httpx.get(f"{api_server.url}/openapi.json", headers=headers).json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=api_server.url, headers=headers)
    # Streams and pages are not JSON operations: tested directly in test_api.py.
    return schema.exclude(path_regex=r"^/(progress|dashboard|metrics)")


def test_no_server_errors_and_responses_match_the_schema(
    api_schema: schemathesis.schemas.BaseSchema,
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        check()


def test_the_execute_progress_cancel_resume_flow_holds_statefully(
    api_schema: schemathesis.schemas.BaseSchema,
) -> None:
    """schemathesis walks the document's links with real execution ids: execute, then
    follow, inspect, cancel, resume and fetch it, in any order, never a 5xx."""
    links = api_schema.raw_schema["paths"]["/execute"]["post"]["responses"]["202"]["links"]
    assert {"GetExecution", "CancelExecution", "ResumeExecution"} <= set(links)
    machine = api_schema.as_state_machine()
    machine.run(
        settings=settings(
            max_examples=8,
            stateful_step_count=4,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )

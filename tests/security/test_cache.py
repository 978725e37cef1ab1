"""The result cache serves a client only what that client's runs produced, unless the template
shares its cache on purpose."""

from __future__ import annotations

import random
import uuid
from typing import Any

from tests.e2e.test_api import execute, sse_events
from tests.live import Api


def _run(api: Api, template: str, value: int, key: str) -> dict[str, Any]:
    """Run ``template`` as ``key``'s client to its end; its ``heavy`` stage as the API shows it."""
    run = execute(api, template, {"value": value}, key=key)["execution_id"]
    assert sse_events(api, run, key=key)[-1][1]["status"] == "completed"
    stages = api.call("GET", f"/executions/{run}", key=key).json()["stages"]
    heavy = next(stage for stage in stages if stage["stage"] == "heavy")
    return {"execution_id": run, **heavy}


def test_another_client_never_gets_a_cached_result(api_server: Api) -> None:
    value = random.randrange(10**9)
    first = _run(api_server, "cached", value, "client")
    again = _run(api_server, "cached", value, "client")
    assert not first["cache_hit"] and again["cache_hit"]  # the cache works for its client
    other = _run(api_server, "cached", value, "other")
    assert other["cache_hit"] is False
    assert first["execution_id"] not in other["data_reference"]["storage_key"]
    assert other["execution_id"] in other["data_reference"]["storage_key"]


def test_a_template_may_share_its_cache_across_clients(api_server: Api) -> None:
    name = f"shared_{uuid.uuid4().hex[:8]}"
    definition = api_server.call("GET", "/templates/cached").json()["definition"]
    definition.update(name=name, version=1)
    for stage in definition["stages"]:
        if stage["id"] == "heavy":
            stage["cache"]["shared"] = True
    put = api_server.call("PUT", f"/templates/{name}", key="admin", json={"definition": definition})
    assert put.status_code == 201, put.text
    value = random.randrange(10**9)
    first = _run(api_server, name, value, "client")
    other = _run(api_server, name, value, "other")
    assert not first["cache_hit"] and other["cache_hit"]
    assert first["execution_id"] in other["data_reference"]["storage_key"]

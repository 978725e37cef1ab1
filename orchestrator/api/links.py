"""OpenAPI links: how the operations on one execution follow from ``POST /execute``.

They document the flow (execute, then follow, inspect, cancel, resume, fetch) for readers and
generators, and let stateful testers (schemathesis) walk it with real execution ids.
"""

from __future__ import annotations

from typing import Any

#: The operations an execution id leads to, by link name: (path, method).
ON_EXECUTION = {
    "GetExecution": ("/executions/{execution_id}", "get"),
    "FollowProgress": ("/progress/{execution_id}", "get"),
    "CancelExecution": ("/executions/{execution_id}/cancel", "post"),
    "ResumeExecution": ("/executions/{execution_id}/resume", "post"),
    "GetDeliverables": ("/executions/{execution_id}/deliverables", "get"),
}
#: Responses that carry an ``execution_id`` in their body: (path, method, status).
SOURCES = (
    ("/execute", "post", "202"),
    ("/executions/{execution_id}/cancel", "post", "200"),
    ("/executions/{execution_id}/resume", "post", "202"),
)


def add_links(document: dict[str, Any]) -> None:
    """Add the links to ``document`` (in place), for the operations it has."""
    paths = document.get("paths", {})
    for path, method, status in SOURCES:
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        response["links"] = {
            name: {
                "operationRef": "#/paths/" + target.replace("/", "~1") + f"/{verb}",
                "parameters": {"execution_id": "$response.body#/execution_id"},
            }
            for name, (target, verb) in ON_EXECUTION.items()
            if verb in paths.get(target, {})
        }

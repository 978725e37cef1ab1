"""Health, metrics, the OpenAPI document and the dashboard."""

from __future__ import annotations

from importlib import resources as package_files
from typing import Any

from flask import Response, current_app, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from prometheus_client import CONTENT_TYPE_LATEST

from orchestrator.auth import Scope
from orchestrator.health import check_dependencies

api = APIBlueprint("ops", __name__, abp_tags=[Tag(name="ops")])


@api.get("/health")
def health() -> Response:
    """Liveness of the API and each dependency; 503 when one is down. No key needed."""
    runtime = current_app.extensions["orchestrator"]
    probes = check_dependencies(runtime.settings)
    ok = all(p.ok for p in probes)
    response = jsonify(
        {
            "status": "ok" if ok else "degraded",
            "dependencies": {p.name: p.as_dict() for p in probes},
        }
    )
    response.status_code = 200 if ok else 503
    return response


@api.get("/metrics", security=[{"bearer": []}])
def metrics() -> Response:
    """Prometheus text format."""
    g.principal.require(Scope.MONITOR)
    body = current_app.extensions["metrics"].render()
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


@api.get("/openapi.json", security=[{"bearer": []}])
def openapi() -> dict[str, Any]:
    """This API's OpenAPI document, generated from the models the endpoints validate with."""
    return current_app.api_doc  # type: ignore[attr-defined, no-any-return]


@api.get("/dashboard", security=[{"bearer": []}])
def dashboard() -> Response:
    """The monitoring page (open it as /dashboard?key=<monitor key> in a browser)."""
    g.principal.require(Scope.MONITOR)
    page = (package_files.files("orchestrator") / "static" / "dashboard.html").read_text()
    return Response(page, mimetype="text/html")

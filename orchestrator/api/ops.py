"""Health, metrics, the OpenAPI document and its docs page (the dashboard: ``dashboard.py``)."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, g, jsonify, redirect, request
from flask_openapi3 import APIBlueprint, Tag
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Response as WerkzeugResponse

from orchestrator import template_registry
from orchestrator.auth import Scope, authenticate
from orchestrator.core.templates import parameters_schema
from orchestrator.ops.health import check_dependencies

api = APIBlueprint("ops", __name__, abp_tags=[Tag(name="ops")])

#: Keys that see each dependency's state on /health (its host, its error).
DETAILS_SCOPES = {Scope.MONITOR, Scope.ADMIN}


@api.get("/health")
def health() -> Response:
    """Liveness, 503 when a dependency is down; no key needed. Each dependency's state
    (hosts, errors) only to a monitor key: to anyone else it maps the deployment."""
    runtime = current_app.extensions["orchestrator"]
    probes = check_dependencies(runtime.settings)
    ok = all(p.ok for p in probes)
    body: dict[str, Any] = {"status": "ok" if ok else "degraded"}
    header = request.headers.get("Authorization")
    database_up = any(p.name == "database" and p.ok for p in probes)
    # The key is checked only when the database can answer, so /health never waits on it.
    if header and database_up and authenticate(runtime.db, header).scope in DETAILS_SCOPES:
        body["dependencies"] = {p.name: p.as_dict() for p in probes}
    response = jsonify(body)
    response.status_code = 200 if ok else 503
    return response


@api.get("/metrics", security=[{"bearer": []}])
def metrics() -> Response:
    """Prometheus text format."""
    g.principal.require(Scope.MONITOR)
    body = current_app.extensions["metrics"].render()
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


@api.get("/openapi.json")
def openapi() -> dict[str, Any]:
    """This API's OpenAPI document, generated from the models the endpoints validate with;
    no key needed. With a client key it also carries each template's parameters as a JSON
    Schema (``components.schemas["<template>.parameters"]``)."""
    document: dict[str, Any] = current_app.api_doc  # type: ignore[attr-defined]
    header = request.headers.get("Authorization")
    if not header:
        return document
    runtime = current_app.extensions["orchestrator"]
    authenticate(runtime.db, header).require(Scope.CLIENT)
    schemas = {
        f"{template.name}.parameters": parameters_schema(template)
        for template in template_registry.current_templates(runtime.db)
    }
    components = {**document.get("components", {})}
    components["schemas"] = {**components.get("schemas", {}), **schemas}
    return {**document, "components": components}


@api.get("/docs", doc_ui=False)
def docs() -> WerkzeugResponse:
    """The interactive documentation (Swagger UI, served from the package: no CDN)."""
    return redirect("/docs/swagger")


def register_docs(app: Flask) -> None:
    """Swagger UI's page and files (the flask-openapi3-swagger package) under /docs."""
    from flask_openapi3_swagger.plugins import RegisterPlugin  # type: ignore[import-untyped]

    app.register_blueprint(RegisterPlugin.register(doc_url="/openapi.json"), url_prefix="/docs")

"""Templates, the worker registry, the resource pool, how good the estimates were."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import current_app, g, request
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import select

from orchestrator import template_registry
from orchestrator.api.models import (
    AccuracyOut,
    AccuracyQuery,
    HeartbeatBody,
    OkOut,
    ScalingOut,
    TemplateBody,
    TemplateOut,
    TemplatePath,
    TemplatePutOut,
    TemplateQuery,
    WorkerOut,
    WorkerRegisterBody,
)
from orchestrator.auth import Scope
from orchestrator.core.templates import parameters_schema, parse_template
from orchestrator.db import WorkerRegistry
from orchestrator.engine import scaling
from orchestrator.engine.estimates import accuracy
from orchestrator.engine.housekeeping import usage as storage_usage
from orchestrator.errors import Forbidden, NotFound, ValidationFailed
from orchestrator.runtime import Runtime
from orchestrator.worker_registry import refresh

api = APIBlueprint(
    "catalog", __name__, abp_tags=[Tag(name="catalog")], abp_security=[{"bearer": []}]
)


def runtime() -> Runtime:
    return current_app.extensions["orchestrator"]


@api.get("/templates")
def list_templates() -> dict[str, Any]:
    """Every template's current version."""
    g.principal.require(Scope.CLIENT)
    return {"templates": template_registry.list_current(runtime().db)}


@api.get("/templates/<name>", responses={200: TemplateOut})
def get_template(path: TemplatePath, query: TemplateQuery) -> dict[str, Any]:
    """A template's current (or given) version, and its parameters as a JSON Schema."""
    g.principal.require(Scope.CLIENT)
    template = template_registry.get(runtime().db, path.name, query.version)
    return {
        "name": template.name,
        "version": template.version,
        "definition": template.model_dump(mode="json"),
        "parameters_schema": parameters_schema(template),
    }


@api.put("/templates/<name>", responses={200: TemplatePutOut, 201: TemplatePutOut})
def put_template(path: TemplatePath, body: TemplateBody) -> tuple[dict[str, Any], int]:
    """Validate and add a version (template sync); an unchanged definition adds nothing."""
    g.principal.require(Scope.ADMIN)
    if (body.definition is None) == (body.yaml is None):
        raise ValidationFailed("send exactly one of 'definition' (JSON) or 'yaml' (text)")
    template = (
        template_registry.parse_yaml(body.yaml, source=path.name)
        if body.yaml is not None
        else parse_template(body.definition or {})
    )
    if template.name != path.name:
        raise ValidationFailed(f"name: {template.name!r} does not match the URL's {path.name!r}")
    rt = runtime()
    row, created = template_registry.put(
        rt.db,
        template,
        template_registry.known_workers(rt),
        source=body.yaml,
        created_by=g.principal.key_id,
    )
    return {"name": row.name, "version": row.version, "created": created}, 201 if created else 200


def _worker_out(row: WorkerRegistry) -> dict[str, Any]:
    return {
        "worker_name": row.worker_name,
        "display_name": row.display_name,
        "capabilities": row.capabilities,
        "resource_requirements": row.resource_requirements,
        "avg_execution_time_ms": row.avg_execution_time_ms,
        "avg_cost_usd": row.avg_cost_usd,
        "health_status": row.health_status,
        "last_health_check": row.last_health_check.isoformat() if row.last_health_check else None,
        "origin": row.origin,
    }


@api.get("/workers")
def workers() -> dict[str, Any]:
    """The worker registry: capabilities, requirements, averages, health."""
    g.principal.require(Scope.MONITOR)
    rt = runtime()
    refresh(rt)
    with rt.db.session() as session:
        rows = session.scalars(select(WorkerRegistry).order_by(WorkerRegistry.worker_name)).all()
        return {"workers": [_worker_out(row) for row in rows]}


@api.get("/resources")
def resources() -> dict[str, Any]:
    """The live pool: quotas used and limits, rates, capacity, storage."""
    g.principal.require(Scope.MONITOR)
    rt = runtime()
    snapshot = rt.admission.snapshot()
    # Object storage as the last housekeeping sweep measured it (a walk of the bucket per
    # request would be as slow as the bucket is big); measured now only before the first one.
    snapshot["storage"] = storage_usage(rt)
    if snapshot["storage"]["object_storage"]["bytes"] is None:
        snapshot["storage"]["object_storage"].update(rt.store.usage())
    snapshot["utilization"] = {
        worker: figures["utilization"] for worker, figures in scaling.utilization(rt).items()
    }
    return snapshot


@api.get("/scaling", responses={200: ScalingOut})
def scaling_report() -> dict[str, Any]:
    """Per worker type: utilization, the arrival forecast, the backlog and the workers the
    next horizon needs, within resources.yaml's min/max and what the quotas can feed."""
    g.principal.require(Scope.MONITOR)
    return scaling.report(runtime())


def _refuse_builtin(worker_name: str, row: WorkerRegistry | None) -> None:
    """A worker of this codebase is registered and checked by the engine alone: an external
    key that could speak for one could mark it unhealthy."""
    if worker_name in runtime().registry or (row is not None and row.origin == "internal"):
        raise Forbidden(f"{worker_name!r} is a worker type of this codebase")


def _speaking_worker(claimed: str | None = None) -> str:
    """The X-Worker-ID of a worker key, which must be the worker the key was made for."""
    g.principal.require(Scope.WORKER)
    worker_id = request.headers.get("X-Worker-ID")
    if not worker_id:
        raise ValidationFailed("missing X-Worker-ID header")
    if g.principal.scope == Scope.WORKER and worker_id != g.principal.client_id:
        raise Forbidden(f"this key speaks for worker {g.principal.client_id!r}, not {worker_id!r}")
    if claimed is not None and claimed != worker_id:
        raise Forbidden(f"X-Worker-ID {worker_id!r} cannot register worker {claimed!r}")
    return worker_id


@api.post("/workers/register", responses={200: WorkerOut})
def register_worker(body: WorkerRegisterBody) -> dict[str, Any]:
    """A worker living outside this codebase announces itself."""
    _speaking_worker(body.worker_name)
    with runtime().db.session() as session:
        row = session.get(WorkerRegistry, body.worker_name)
        _refuse_builtin(body.worker_name, row)
        if row is None:
            row = WorkerRegistry(worker_name=body.worker_name)
            session.add(row)
        row.display_name = body.display_name or body.worker_name
        row.capabilities = body.capabilities
        row.resource_requirements = body.resource_requirements
        row.endpoint = body.endpoint
        row.origin = "external"
        row.health_status = "healthy"
        row.last_health_check = datetime.now(UTC)
        session.flush()
        return _worker_out(row)


@api.post("/workers/heartbeat", responses={200: OkOut})
def heartbeat(body: HeartbeatBody) -> dict[str, Any]:
    """A registered worker says it is alive (and how it is doing)."""
    worker_id = _speaking_worker()
    with runtime().db.session() as session:
        row = session.get(WorkerRegistry, worker_id)
        _refuse_builtin(worker_id, row)
        if row is None:
            raise NotFound(f"worker {worker_id!r} is not registered; POST /workers/register first")
        row.health_status = body.status
        row.last_health_check = datetime.now(UTC)
        if body.avg_execution_time_ms is not None:
            row.avg_execution_time_ms = body.avg_execution_time_ms
        if body.avg_cost_usd is not None:
            row.avg_cost_usd = body.avg_cost_usd
    return {"ok": True, "status": body.status}


@api.get("/estimates/accuracy", responses={200: AccuracyOut})
def estimates_accuracy(query: AccuracyQuery) -> dict[str, Any]:
    """Median absolute % error of time and cost, interval coverage, share within the p90:
    overall, per template and per stage, over the last runs."""
    g.principal.require(Scope.MONITOR)
    return accuracy(runtime(), template=query.template, last=query.last)

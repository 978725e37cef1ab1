"""Estimate, execute, follow, inspect, cancel, resume, deliverables."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from queue import Empty
from typing import Any

from flask import Response, current_app, g, request, stream_with_context
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import func, select

from orchestrator.api.models import (
    DeliverablesOut,
    EstimateBody,
    EstimateOut,
    ExecuteBody,
    ExecuteOut,
    ExecutionList,
    ExecutionOut,
    ExecutionPath,
    ExecutionsQuery,
)
from orchestrator.api.stream_hub import entry_position, render_frames, sse_frame
from orchestrator.auth import Scope
from orchestrator.constants import ExecutionStatus, Priority
from orchestrator.db import PipelineExecution
from orchestrator.engine import coordinator
from orchestrator.engine.estimates import estimate_run
from orchestrator.engine.events import final_event, stream_key
from orchestrator.engine.execution_view import deliverables as deliverables_of
from orchestrator.engine.execution_view import describe, serialize
from orchestrator.engine.recovery import resume as resume_execution
from orchestrator.errors import BadRequest, Conflict, NotFound, ValidationFailed
from orchestrator.runtime import Runtime

api = APIBlueprint(
    "executions", __name__, abp_tags=[Tag(name="executions")], abp_security=[{"bearer": []}]
)

#: Seconds between SSE comments on an idle stream, so proxies keep it open.
HEARTBEAT_S = 15
#: The id of the final event made from a run's row when its events have expired.
EXPIRED_FINAL_ID = "0-1"
#: A Redis stream entry id (what SSE ids are): milliseconds and a sequence, each 64-bit.
EVENT_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")


def runtime() -> Runtime:
    return current_app.extensions["orchestrator"]


def check_owned(execution_id: str) -> None:
    """Go on only if this key may see the execution; another client's is reported as not
    found. Reads one column: a progress stream's first event waits for this."""
    principal = g.principal
    client_id = coordinator.client_of(runtime(), execution_id)
    if not principal.sees_everything() and client_id != principal.client_id:
        raise NotFound(f"execution {execution_id!r} not found")


#: What a monitor key reads in place of an error's text.
HIDDEN_ERROR = "hidden from monitor keys: an error may quote the client's parameters"


def for_principal(body: dict[str, Any]) -> dict[str, Any]:
    """An execution as this key may read it: a monitor key sees states, counts and costs,
    never a client's parameters or where its outputs are (SPEC: scopes), nor the text of
    its errors (a stage's message may quote a parameter); that there was one, it sees."""
    if g.principal.scope is not Scope.MONITOR:
        return body
    body["parameters"] = None
    for item in (body, *(body.get("stages") or ())):
        if item.get("error"):
            item["error"] = HIDDEN_ERROR
    for stage in body.get("stages") or ():
        stage["data_reference"] = None
        summary = stage.get("summary")
        if isinstance(summary, dict) and summary.get("errors"):
            stage["summary"] = {**summary, "errors": [HIDDEN_ERROR] * len(summary["errors"])}
    return body


def _same_request(execution: PipelineExecution, body: ExecuteBody) -> bool:
    return (
        execution.template_name == body.template_name
        and execution.parameters == body.parameters
        and execution.priority == body.priority
    )


def _cursor(value: str | None) -> str | None:
    """A ``Last-Event-ID`` as a stream id, or 400: a malformed one would stop the shared
    reader of every stream, not only this one."""
    if value is None or value == "":
        return None
    match = EVENT_ID.fullmatch(value.strip())
    if not match or any(int(part) >= 2**64 for part in match.groups("0")):
        raise BadRequest(
            f"Last-Event-ID {value[:64]!r} is not an event id (as sent: <ms>-<seq>)",
            details={"header": "Last-Event-ID"},
        )
    return value.strip()


def _said_all(execution_id: str, cursor: str | None) -> Response | None:
    """The answer for a stream with nothing more to say, or None while the run may still say
    something past ``cursor``: 204 (which tells an EventSource to stop reconnecting) when
    its final event is at or before the cursor; the final event alone, made from the run's
    row, when the run ended so long ago that its events expired."""
    tail: Any = runtime().redis.xrevrange(stream_key(execution_id), count=1)
    if tail:
        position, _, _, final = render_frames(tail)[0]
        past = cursor is not None and position <= entry_position(cursor)
        return Response(status=204) if final and past else None
    execution = coordinator.load(runtime(), execution_id, stages=False)
    if not ExecutionStatus(execution.status).terminal:
        return None
    if cursor is not None:
        return Response(status=204)
    event = final_event(
        execution.status,
        execution.error or execution.status,
        execution.total_cost_usd or 0.0,
        execution.total_time_ms,
    )
    frame = sse_frame(EXPIRED_FINAL_ID, "final", json.dumps(event, default=str))
    return Response(f"retry: 2000\n\n{frame}", mimetype="text/event-stream")


@api.post("/estimate", responses={200: EstimateOut})
def estimate(body: EstimateBody) -> dict[str, Any]:
    """Cost, time and feasibility of a run, before anything runs."""
    g.principal.require(Scope.CLIENT)
    return estimate_run(runtime(), body.template_name, body.parameters)


@api.post("/execute", responses={202: ExecuteOut})
def execute(body: ExecuteBody) -> tuple[dict[str, Any], int]:
    """Start a run; the same request_id from the same client returns the same execution, and
    a different body under a request_id already used is a conflict."""
    g.principal.require(Scope.CLIENT)
    rt = runtime()
    execution, created = coordinator.submit(
        rt,
        body.template_name,
        body.parameters,
        client_id=g.principal.client_id,
        request_id=body.request_id,
        priority=Priority(body.priority),
    )
    if not created and not _same_request(execution, body):
        raise Conflict(
            f"request_id {body.request_id!r} was used for another request "
            f"(execution {execution.execution_id}); use a new request_id for a new run",
            details={"request_id": body.request_id, "execution_id": execution.execution_id},
        )
    base = execution.started_at or execution.created_at or datetime.now(UTC)
    base = base if base.tzinfo else base.replace(tzinfo=UTC)
    eta = base + timedelta(milliseconds=execution.estimated_time_ms or 0)
    return {
        "execution_id": execution.execution_id,
        "status": execution.status,
        "estimated_completion": eta.isoformat(),
        "progress_url": f"/progress/{execution.execution_id}",
    }, 202


@api.get("/executions", responses={200: ExecutionList})
def list_executions(query: ExecutionsQuery) -> dict[str, Any]:
    """Executions this key may see, newest first; filter by status and template."""
    g.principal.require(Scope.CLIENT, Scope.MONITOR)
    conditions = []
    if not g.principal.sees_everything():
        conditions.append(PipelineExecution.client_id == g.principal.client_id)
    if query.status:
        conditions.append(PipelineExecution.status == query.status)
    if query.template:
        conditions.append(PipelineExecution.template_name == query.template)
    with runtime().db.session() as session:
        total = session.scalar(
            select(func.count()).select_from(PipelineExecution).where(*conditions)
        )
        rows = session.scalars(
            select(PipelineExecution)
            .where(*conditions)
            .order_by(PipelineExecution.created_at.desc())
            .limit(query.limit)
            .offset(query.offset)
        ).all()
        items = [for_principal(serialize(row)) for row in rows]
    return {"items": items, "total": total or 0, "limit": query.limit, "offset": query.offset}


@api.get("/executions/<execution_id>", responses={200: ExecutionOut})
def get_execution(path: ExecutionPath) -> dict[str, Any]:
    """Status, per-stage status, cost, time, handshake summaries and errors."""
    g.principal.require(Scope.CLIENT, Scope.MONITOR)
    check_owned(path.execution_id)
    return for_principal(describe(runtime(), path.execution_id))


def _takes_no_body(action: str, why: str = "") -> None:
    """422 for a body with anything in it: an action that takes none must not look as if it
    had honoured one (``{}`` and no body are the same)."""
    if g.get("body"):  # the request's JSON object, parsed (and checked) before any view
        reason = f": {why}" if why else ""
        raise ValidationFailed(f"body: {action} takes no body{reason}", details={"where": "body"})


@api.post("/executions/<execution_id>/cancel", responses={200: ExecutionOut})
def cancel(path: ExecutionPath) -> dict[str, Any]:
    """Stop the run: revoke what runs, release every reservation."""
    g.principal.require(Scope.CLIENT)
    _takes_no_body("cancel")
    check_owned(path.execution_id)
    coordinator.cancel(runtime(), path.execution_id)
    return describe(runtime(), path.execution_id)


@api.post("/executions/<execution_id>/resume", responses={202: ExecutionOut})
def resume(path: ExecutionPath) -> tuple[dict[str, Any], int]:
    """Rerun a failed or cancelled execution from its last good checkpoints."""
    g.principal.require(Scope.CLIENT)
    _takes_no_body(
        "resume", "it reruns the run with its own parameters; to change them, execute a new run"
    )
    check_owned(path.execution_id)
    resume_execution(runtime(), path.execution_id)
    return serialize(coordinator.load(runtime(), path.execution_id)), 202


@api.get("/executions/<execution_id>/deliverables", responses={200: DeliverablesOut})
def deliverables(path: ExecutionPath) -> dict[str, Any]:
    """The run's outputs for people, with time-limited download URLs (not to a monitor key)."""
    g.principal.require(Scope.CLIENT)
    check_owned(path.execution_id)
    items = deliverables_of(runtime(), path.execution_id)
    return {"execution_id": path.execution_id, "deliverables": items}


@api.get("/progress/<execution_id>")
def progress(path: ExecutionPath) -> Response:
    """Server-Sent Events until the final one; ``Last-Event-ID`` resumes without loss.

    Not to a monitor key: stage messages may quote a client's parameters."""
    g.principal.require(Scope.CLIENT)
    check_owned(path.execution_id)
    hub = current_app.extensions["stream_hub"]
    last = _cursor(request.headers.get("Last-Event-ID") or request.args.get("last_event_id"))
    subscription = hub.subscribe(path.execution_id, last)
    if subscription.queue.empty() and (ended := _said_all(path.execution_id, last)) is not None:
        hub.unsubscribe(subscription)
        return ended

    def stream() -> Iterator[str]:
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    batch = [subscription.queue.get(timeout=HEARTBEAT_S)]
                except Empty:
                    yield ": keep-alive\n\n"
                    continue
                with suppress(Empty):  # what is ready now goes out as one chunk: one write
                    while batch[-1] is not None:
                        batch.append(subscription.queue.get_nowait())
                if frames := "".join(f for f in batch if f is not None):
                    yield frames
                if batch[-1] is None:
                    return
        finally:
            hub.unsubscribe(subscription)

    return Response(
        stream_with_context(stream()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

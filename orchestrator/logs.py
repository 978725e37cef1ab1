"""Log lines as text (Celery's and gunicorn's defaults) or JSON (``ORCH_LOG_FORMAT=json``).

A stage's lines carry its execution id, stage id, worker type and attempt: Celery's
``task_prerun`` binds them in a context variable and a filter on our handler copies them onto
every record, whichever logger wrote it (the runner, a worker's own ``logging`` calls, Celery's
tracer). Two more filters: what a task returned (a whole handshake packet) reaches the log only
at DEBUG, and the configured secrets (the S3 secret key, the LLM key, the database and Redis
passwords, any ``Bearer`` token) are replaced before a line is written.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from celery import Celery

    from orchestrator.settings import Settings

#: The fields bound on every line of a stage (or coordinator task).
CONTEXT_FIELDS = ("execution_id", "stage_id", "worker_type", "attempt")
_context: ContextVar[dict[str, Any] | None] = ContextVar("orchestrator_log_context", default=None)
REDACTED = "[redacted]"
_BEARER = re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=-]+")
#: Keys of Celery's log context that hold a task's payload (packets, for a stage).
_PAYLOAD = frozenset({"args", "kwargs", "return_value"})
_AT_DEBUG = "(logged at DEBUG)"


class ContextFilter(logging.Filter):
    """Copies the bound stage fields onto each record (JSON keys, ``%(stage_id)s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_context.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class RedactFilter(logging.Filter):
    """Replaces every configured secret, and bearer tokens, in the formatted message."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: leave it to the handler's error path
            return True
        cleaned = _BEARER.sub(f"Bearer {REDACTED}", message)
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, REDACTED)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class PacketFilter(logging.Filter):
    """Celery logs a task's arguments and return value (``Task ... received``, ``... succeeded
    in 0.1s: <value>``, and the same as ``data`` for structured handlers); for a stage those
    are whole handshake packets, which are kept for DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return True
        if isinstance(record.args, dict) and "return_value" in record.args:
            record.args = {**record.args, "return_value": _AT_DEBUG}
        data = getattr(record, "data", None)
        if isinstance(data, dict) and _PAYLOAD & data.keys():
            record.data = {k: (_AT_DEBUG if k in _PAYLOAD else v) for k, v in data.items()}
        return True


def secrets_of(settings: Settings) -> list[str]:
    """What must never appear in a log line."""
    found = [settings.s3_secret_key.get_secret_value(), settings.llm_api_key.get_secret_value()]
    for url in (settings.database_url, settings.redis_url, settings.broker_url):
        password = urlsplit(url).password
        if password:
            found.append(password)
    return [s for s in found if s]


def bind(**fields: Any) -> Any:
    """Bind ``fields`` to every line logged from here on in this context; returns the token
    ``unbind`` takes."""
    return _context.set({k: v for k, v in fields.items() if v is not None})


def unbind(token: Any) -> None:
    _context.reset(token)


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    # ASCII escapes: a feed's undecodable bytes (lone surrogates) still make a valid line.
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(processName)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_ensure_ascii=True,
    )


def decorate(handler: logging.Handler, settings: Settings) -> None:
    """Our filters (and, for json, our formatter) on a handler someone else made (gunicorn)."""
    if settings.log_format == "json":
        handler.setFormatter(json_formatter())
    for existing in handler.filters:
        if isinstance(existing, ContextFilter | RedactFilter):
            return
    handler.addFilter(ContextFilter())
    handler.addFilter(PacketFilter())
    handler.addFilter(RedactFilter(secrets_of(settings)))


def configure(settings: Settings, level: int | str = logging.INFO) -> None:
    """The root logger writes to stderr in the configured format, through our filters.
    Idempotent: Celery calls it again in each prefork child."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "orchestrator", False)]:
        root.removeHandler(old)
    # sys.__stderr__: inside a Celery worker sys.stderr is redirected into logging itself.
    handler: logging.Handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.orchestrator = True  # type: ignore[attr-defined]
    if settings.log_format != "json":
        text = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"
        handler.setFormatter(logging.Formatter(text))
    decorate(handler, settings)
    root.addHandler(handler)
    root.setLevel(level)


def _task_fields(task: Any, args: Any, kwargs: dict[str, Any] | None) -> dict[str, Any]:
    from orchestrator.constants import COORDINATOR_QUEUE, STAGE_TASK_PREFIX

    name = getattr(task, "name", "") or ""
    kwargs = kwargs or {}
    if name.startswith(STAGE_TASK_PREFIX):
        return {
            "execution_id": kwargs.get("execution_id"),
            "stage_id": kwargs.get("stage_id"),
            "worker_type": name[len(STAGE_TASK_PREFIX) :],
            "attempt": kwargs.get("attempt", 1),
        }
    execution_id = kwargs.get("execution_id")
    if execution_id is None and args and isinstance(args[0], str):
        execution_id = args[0]  # coordinator.start / launch take it first
    return {"execution_id": execution_id, "worker_type": COORDINATOR_QUEUE}


def install(app: Celery, settings: Settings) -> None:
    """Celery's hooks: bind each task's fields; with json, our logging instead of Celery's."""
    from celery import signals

    tokens: dict[str, Any] = {}

    def prerun(task_id: str, task: Any, args: Any = None, kwargs: Any = None, **_: Any) -> None:
        if getattr(task, "app", None) is app:
            tokens[task_id] = bind(**_task_fields(task, args, kwargs))

    def postrun(task_id: str, **_: Any) -> None:
        token = tokens.pop(task_id, None)
        if token is not None:
            unbind(token)

    signals.task_prerun.connect(prerun, weak=False)
    signals.task_postrun.connect(postrun, weak=False)

    def setup(loglevel: Any = logging.INFO, **_: Any) -> None:
        configure(settings, loglevel or logging.INFO)

    def after_setup(logger: logging.Logger, **_: Any) -> None:
        for handler in logger.handlers:
            decorate(handler, settings)

    if settings.log_format == "json":
        # Connected, this signal tells Celery to leave logging to us (its docs: setup_logging).
        signals.setup_logging.connect(setup, weak=False)
    else:
        signals.after_setup_logger.connect(after_setup, weak=False)
        signals.after_setup_task_logger.connect(after_setup, weak=False)

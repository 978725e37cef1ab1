"""A live stack on the suite's services: real worker processes (one per queue), a real
``orchestrator api`` process and keys of every scope. Loaded for every tier by the root
conftest (``pytest_plugins``), so the e2e and security tiers share one fleet and one API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from orchestrator import template_registry
from orchestrator.celery_app import create_celery_app
from orchestrator.db import Database, PipelineExecution, StageExecution
from orchestrator.engine import coordinator, events
from orchestrator.ops.supervisor import WorkerFleet, start_fleet
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from tests.conftest import ROOT
from tests.services import WeedServer


@pytest.fixture(scope="session")
def e2e_settings(settings: Settings, s3_server: WeedServer) -> Settings:
    """The live stack logs JSON and sums its processes' metrics in one directory, as compose
    runs it (tests/e2e/test_observability.py reads both)."""
    metrics_dir = settings.data_dir / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    return settings.with_overrides(
        templates_dir=ROOT / "tests" / "templates",
        s3_embedded=False,
        log_format="json",
        metrics_dir=metrics_dir,
    )


@pytest.fixture(scope="session")
def celery_app(e2e_settings: Settings) -> Celery:
    return create_celery_app(e2e_settings)


@pytest.fixture(scope="session")
def runtime(e2e_settings: Settings, celery_app: Celery, database: Database) -> Iterator[Runtime]:
    rt = Runtime(e2e_settings, celery_app)
    rt.redis.flushdb()  # once, before any worker declares its queues
    template_registry.sync_directory(
        rt.db, e2e_settings.templates_dir, template_registry.known_workers(rt)
    )
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def fleet(runtime: Runtime, e2e_settings: Settings, celery_app: Celery) -> Iterator[WorkerFleet]:
    workers = start_fleet(e2e_settings, celery_app, concurrency=2)
    yield workers
    workers.stop()


class Runner:
    """Submit a template and wait for its final event, then read its rows."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def run(
        self,
        template: str,
        parameters: dict[str, Any] | None = None,
        timeout_s: float = 120,
        **options: Any,
    ) -> tuple[PipelineExecution, list[dict[str, Any]]]:
        execution, _ = coordinator.submit(self.runtime, template, parameters or {}, **options)
        seen = [
            e
            for _, e in events.follow(
                self.runtime.redis, execution.execution_id, timeout_s=timeout_s
            )
        ]
        return coordinator.load(self.runtime, execution.execution_id), seen

    def stages(self, execution_id: str) -> dict[str, StageExecution]:
        from sqlalchemy import select

        with self.runtime.db.session() as session:
            rows = session.scalars(
                select(StageExecution).where(StageExecution.execution_id == execution_id)
            ).all()
            return {row.stage_name: row for row in rows}


@pytest.fixture
def runner(runtime: Runtime, fleet: WorkerFleet) -> Runner:
    return Runner(runtime)


def run_cli(*args: str, timeout_s: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    """``orchestrator ARGS`` in a child process: only the given ``ORCH_*`` variables."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    environment.update(COLUMNS="160", **env)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Api:
    """A real ``orchestrator api`` process and keys of every scope."""

    def __init__(self, url: str, keys: dict[str, str]) -> None:
        import httpx

        self.url = url
        self.keys = keys
        self.http = httpx.Client(base_url=url, timeout=30)

    def call(self, method: str, path: str, key: str | None = "client", **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {self.keys[key]}"
        return self.http.request(method, path, headers=headers, **kwargs)


@pytest.fixture(scope="session")
def api_server(runtime: Runtime, e2e_settings: Settings, fleet: WorkerFleet) -> Iterator[Api]:
    from orchestrator.auth import Scope, create_key
    from orchestrator.ops.supervisor import start_api

    port = free_port()
    process = start_api(e2e_settings, port)
    url = f"http://127.0.0.1:{port}"
    keys = {
        "client": create_key(runtime.db, Scope.CLIENT, client_id="acme"),
        "other": create_key(runtime.db, Scope.CLIENT, client_id="globex"),
        "monitor": create_key(runtime.db, Scope.MONITOR),
        "admin": create_key(runtime.db, Scope.ADMIN),
        "worker": create_key(runtime.db, Scope.WORKER, client_id="external_summariser"),
    }
    yield Api(url, keys)
    process.terminate()
    process.wait(15)

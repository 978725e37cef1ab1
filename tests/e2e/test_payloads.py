"""Only references travel through the broker: captured from the real Redis broker traffic.

Redis MONITOR sees every LPUSH kombu makes, from every process, so the test measures the
actual messages the workers and the coordinator publish, not a model of them.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from celery import Celery, chain
from celery.contrib.testing.worker import start_worker

from orchestrator.constants import ExecutionStatus
from orchestrator.settings import Settings
from tests.e2e.conftest import Runner

MEGABYTES = 5


@contextmanager
def broker_messages(redis_url: str) -> Iterator[list[tuple[str, int]]]:
    """Collect (task name, body bytes) of every message pushed to a queue meanwhile."""
    db = int(redis_url.rsplit("/", 1)[1])
    captured: list[tuple[str, int]] = []
    client = redis.Redis.from_url(redis_url)
    ready = threading.Event()

    def listen() -> None:
        with client.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                text = command.get("command", "")
                if command.get("db") != db or not text.startswith("LPUSH "):
                    continue
                _, _queue, payload = text.split(" ", 2)
                if not payload.startswith("{"):
                    continue
                try:
                    message = json.loads(payload)
                except json.JSONDecodeError:
                    continue
                body = base64.b64decode(message["body"])
                captured.append((message["headers"].get("task", "?"), len(body)))
                if message["headers"].get("task") == "stop.monitor":
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield captured
    finally:
        client.lpush(
            "monitor-stop",
            json.dumps(
                {"body": base64.b64encode(b"[]").decode(), "headers": {"task": "stop.monitor"}}
            ),
        )
        thread.join(10)
        client.delete("monitor-stop")
        client.close()


def test_stage_payloads_stay_small_while_each_stage_outputs_five_megabytes(
    runner: Runner, e2e_settings: Settings
) -> None:
    with broker_messages(e2e_settings.broker_url) as messages:
        execution, _ = runner.run("bigdata", {"megabytes": MEGABYTES})
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    stages = runner.stages(execution.execution_id)
    for row in stages.values():
        assert row.data_reference["storage_type"] == "s3"
        assert row.data_reference["size_bytes"] == MEGABYTES * 2**20
    stage_messages = [size for task, size in messages if task.startswith("stage.")]
    assert len(stage_messages) >= 3, messages
    assert max(stage_messages) < 2048, messages
    print(f"\nengine: {len(stage_messages)} stage messages, largest {max(stage_messages)} bytes")


def test_plain_celery_ships_the_data_itself(e2e_settings: Settings) -> None:
    """The same three stages, passing their 5 MB output inline as plain Celery does."""
    app = Celery(
        "inline",
        broker=e2e_settings.broker_url,
        backend=e2e_settings.redis_url,
        set_as_current=False,
    )
    app.conf.update(task_default_queue="inline-comparison", result_expires=60)

    @app.task(name="inline.blob")
    def blob(upstream: str | None = None) -> str:
        if upstream is not None:
            assert len(base64.b64decode(upstream)) == MEGABYTES * 2**20
        return base64.b64encode(os.urandom(MEGABYTES * 2**20)).decode()

    app.loader.import_module("celery.contrib.testing.tasks")
    with (
        start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30),
        broker_messages(e2e_settings.broker_url) as messages,
    ):
        chain(blob.s(), blob.s(), blob.s()).apply_async().get(timeout=120, interval=0.05)
    sizes = [size for task, size in messages if task == "inline.blob"]
    assert len(sizes) == 3
    assert max(sizes) > MEGABYTES * 2**20
    print(f"\nplain Celery: largest message {max(sizes)} bytes")

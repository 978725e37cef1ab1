"""``orchestrator.client`` against a real ``orchestrator api`` process and real workers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from orchestrator.auth import Scope, create_key
from orchestrator.client import (
    AsyncClient,
    Client,
    ConfigurationError,
    ConnectionFailed,
    NotFound,
    QuotaExceeded,
    Retries,
    Unauthorized,
    ValidationFailed,
)
from orchestrator.ops.supervisor import start_api
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from tests.e2e.conftest import Api, free_port, run_cli
from tests.e2e.test_api import sse_events

#: A Redis DB no worker listens on: runs sent there stay pending (see the 429 test).
LONELY_REDIS = "redis://127.0.0.1:6379/12"


class CuttableProxy:
    """A TCP proxy in front of the API whose open connections the test can cut at once,
    as a network failure would, while new connections go through."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections = 0
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [downstream, upstream]
                self.connections += 1
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def close(self) -> None:
        self.cut()
        self.server.close()


@pytest.fixture
def client(api_server: Api) -> Iterator[Client]:
    with Client(api_server.url, api_server.keys["client"]) as session:
        yield session


def test_a_run_followed_across_a_forced_disconnect_misses_and_repeats_nothing(
    api_server: Api,
) -> None:
    proxy = CuttableProxy(int(api_server.url.rsplit(":", 1)[1]))
    try:
        with Client(proxy.url, api_server.keys["client"]) as client:
            run = client.submit("linear5", {"start": 3}, priority="high")
            seen = []
            for event in run.events():
                seen.append(event)
                if len(seen) == 2:
                    proxy.cut()  # the stream breaks mid-run; events() must resume
            execution = run.status()
    finally:
        proxy.close()
    assert proxy.connections >= 2, "the stream was never reconnected"
    assert seen[-1].final and seen[-1].status == "completed"
    assert execution["status"] == "completed"
    ids = [event.id for event in seen]
    assert len(ids) == len(set(ids)), "an event was repeated"
    # Nothing missed: the whole stream, read afterwards in one go, is the same events.
    whole = sse_events(api_server, run.execution_id)
    assert [event_id for event_id, _ in whole] == ids
    assert [data for _, data in whole] == [event.data for event in seen]


def test_wait_then_download_a_deliverable(client: Client, tmp_path: Path) -> None:
    run = client.submit("delivering", {"tokens": 10})
    execution = run.wait(timeout=120)
    assert execution["status"] == "completed"
    [item] = run.deliverables()
    path = run.download(item["name"], tmp_path)
    assert path == tmp_path / "report.md"
    data = path.read_bytes()
    assert data.startswith(b"# Report of write")
    assert len(data) == item["size_bytes"]
    assert hashlib.sha256(data).hexdigest() == item["checksum"]
    with pytest.raises(NotFound, match="has no deliverable 'nope'"):
        run.download("nope", tmp_path)


def test_python_the_cli_with_json_and_plain_http_show_the_same_execution(
    api_server: Api, client: Client
) -> None:
    remote = ("--api", api_server.url, "--key", api_server.keys["client"])
    ran = run_cli("run", "diamond", "--json", *remote)
    assert ran.returncode == 0, ran.stderr
    from_cli = json.loads(ran.stdout)
    execution_id = from_cli["execution_id"]
    from_python = client.run(execution_id).status()
    from_http = api_server.call("GET", f"/executions/{execution_id}").json()
    assert from_cli == from_python == from_http
    status = run_cli("status", execution_id, "--json", *remote)
    assert json.loads(status.stdout) == from_http
    listed = run_cli("deliverables", execution_id, "--json", *remote)
    assert json.loads(listed.stdout) == {"execution_id": execution_id, "deliverables": []}


def test_errors_are_typed_and_say_what_went_wrong(api_server: Api, client: Client) -> None:
    with pytest.raises(NotFound) as unknown:
        client.submit("no_such_template")
    assert unknown.value.status == 404 and "no_such_template" in unknown.value.message
    with pytest.raises(ValidationFailed) as invalid:
        client.estimate("linear5", {"start": "ten"})
    assert invalid.value.code == "validation_failed" and "parameters.start" in str(invalid.value)
    with pytest.raises(NotFound):
        client.run("exec_missing").status()
    with pytest.raises(Unauthorized, match="API 401"), Client(api_server.url, "nope") as bad:
        bad.templates.list()
    with pytest.raises(ConnectionFailed, match="cannot reach the API"):
        Client(f"http://127.0.0.1:{free_port()}", "k").estimate("linear5")
    with pytest.raises(ConfigurationError, match="ORCH_API_URL"):
        Client(None, "k") if not _env_url() else Client("ftp://x", "k")


def _env_url() -> bool:
    import os

    return bool(os.environ.get("ORCH_API_URL"))


def test_templates_workers_and_resources(api_server: Api, client: Client) -> None:
    names = {row["name"] for row in client.templates.list()}
    assert {"linear5", "diamond"} <= names
    linear5 = client.templates.get("linear5")
    assert linear5["definition"]["name"] == "linear5"
    with Client(api_server.url, api_server.keys["monitor"]) as monitor:
        workers = monitor.workers.list()
        assert workers and all({"worker_name", "health_status"} <= set(w) for w in workers)
        assert "storage" in monitor.resources.get()


def test_the_async_client_is_a_twin(api_server: Api) -> None:
    async def scenario() -> tuple[str, list[str], str]:
        async with AsyncClient(api_server.url, api_server.keys["client"]) as client:
            estimate = await client.estimate("linear5", {"start": 1})
            run = await client.submit("linear5", {"start": 1})
            kinds = [event.type async for event in run.events()]
            execution = await run.wait(timeout=60)
            return str(estimate["feasible"]), kinds, execution["status"]

    feasible, kinds, status = asyncio.run(scenario())
    assert feasible == "True" and kinds[-1] == "final" and status == "completed"


@pytest.fixture
def patient_api(
    e2e_settings: Settings, runtime: Runtime, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """An API whose runs nobody picks up (its broker is a Redis DB no worker reads), so they
    stay waiting; a client may have one waiting run, and is told to retry after 1 s."""
    resources = tmp_path / "resources.yaml"
    pool = yaml.safe_load(e2e_settings.resources_file.read_text())
    pool["lease_ttl_s"] = 4  # a client over its waiting runs retries after lease_ttl_s / 4
    pool["admission"] = {"max_waiting_runs_per_client": 1}
    resources.write_text(yaml.safe_dump(pool))
    lonely = redis.Redis.from_url(LONELY_REDIS)
    lonely.flushdb()
    settings = e2e_settings.with_overrides(
        redis_url=LONELY_REDIS, broker_url=LONELY_REDIS, resources_file=resources, data_dir=tmp_path
    )
    port = free_port()
    process = start_api(settings, port)
    key = create_key(runtime.db, Scope.CLIENT, client_id=f"patient-{uuid.uuid4().hex[:8]}")
    yield f"http://127.0.0.1:{port}", key
    process.terminate()
    process.wait(15)
    lonely.flushdb()


class _Retried(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.happened = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "status", None) == 429:
            self.records.append(record)
            self.happened.set()


def test_a_429_is_answered_after_retry_after(patient_api: tuple[str, str]) -> None:
    url, key = patient_api
    client = Client(url, key, retries=Retries(deadline_s=120))
    first = client.submit("slow", {"seconds": 0.1})
    assert first.status()["status"] == "pending"  # nobody serves its queue
    # Without time to wait, the 429 comes back as it is, with when to retry.
    with pytest.raises(QuotaExceeded) as refused, Client(url, key, retries=Retries(0)) as hasty:
        hasty.submit("slow")
    assert refused.value.retry_after == 1.0 and "runs waiting" in refused.value.message

    handler = _Retried()
    logger = logging.getLogger("orchestrator.client")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    outcome: dict[str, object] = {}

    def submit_second() -> None:
        try:
            outcome["run"] = client.submit("slow", {"seconds": 0.1})
        except Exception as exc:  # reported below, not lost in the thread
            outcome["error"] = exc

    second = threading.Thread(target=submit_second)
    second.start()
    try:
        assert handler.happened.wait(60), "the second run was never answered 429"
        first.cancel()  # the waiting slot frees: the next retry is accepted
        second.join(120)
    finally:
        logger.removeHandler(handler)
    assert "error" not in outcome, outcome.get("error")
    accepted = outcome["run"]
    record = handler.records[0]
    assert record.retry_after == 1.0 and record.delay_s == record.retry_after  # type: ignore[attr-defined]
    assert accepted.execution_id != first.execution_id  # type: ignore[attr-defined]
    accepted.cancel()  # type: ignore[attr-defined]
    client.close()

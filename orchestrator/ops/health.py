"""Probes of every dependency: used at process start (fail fast) and by ``GET /health``.

Every probe has a short timeout of its own and all of them run side by side under one
deadline, so a frozen dependency (accepting connections, answering nothing) makes ``/health``
report it down in seconds instead of hanging for as long as that client would retry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
import urllib3
from kombu import Connection

from orchestrator.db.session import Database
from orchestrator.errors import ConfigError
from orchestrator.settings import Settings
from orchestrator.storage.objects import ObjectStore

#: Seconds each probe's client waits to connect or for an answer.
PROBE_TIMEOUT_S = 2
#: Seconds after which a probe that has not returned is reported down, whatever it does.
DEADLINE_S = 3.0


@dataclass(frozen=True)
class Probe:
    """The state of one dependency."""

    name: str
    variable: str
    ok: bool
    latency_ms: float
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "status": "ok" if self.ok else "down",
            "latency_ms": round(self.latency_ms, 2),
            "error": self.error,
            "variable": self.variable,
        }


def _redis(settings: Settings) -> None:
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=PROBE_TIMEOUT_S,
        socket_timeout=PROBE_TIMEOUT_S,
    )
    try:
        client.ping()
    finally:
        client.close()


def _broker(settings: Settings) -> None:
    with Connection(settings.broker_url, connect_timeout=PROBE_TIMEOUT_S) as connection:
        connection.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_S)


def _database(settings: Settings) -> None:
    database = Database(settings, connect_timeout_s=PROBE_TIMEOUT_S)
    try:
        database.ping()
    finally:
        database.dispose()


def _storage(settings: Settings) -> None:
    timeout = urllib3.Timeout(connect=PROBE_TIMEOUT_S, read=PROBE_TIMEOUT_S)
    ObjectStore(settings, timeout=timeout, retries=0).ping()


PROBES: dict[str, tuple[str, Callable[[Settings], None]]] = {
    "redis": ("ORCH_REDIS_URL", _redis),
    "broker": ("ORCH_BROKER_URL", _broker),
    "database": ("ORCH_DATABASE_URL", _database),
    "object_storage": ("ORCH_S3_ENDPOINT", _storage),
}


def probe(settings: Settings, name: str) -> Probe:
    """Run one probe; never raises."""
    variable, check = PROBES[name]
    started = time.perf_counter()
    try:
        check(settings)
    except Exception as exc:  # a probe reports any failure; it must never raise
        message = getattr(exc, "message", None) or f"{exc.__class__.__name__}: {exc}"
        return Probe(name, variable, False, (time.perf_counter() - started) * 1000, message)
    return Probe(name, variable, True, (time.perf_counter() - started) * 1000)


def check_dependencies(settings: Settings, names: tuple[str, ...] = tuple(PROBES)) -> list[Probe]:
    """Every probe at once; one still running at the deadline is reported down."""
    results: dict[str, Probe] = {}

    def run(name: str) -> None:
        results[name] = probe(settings, name)

    threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in names]
    deadline = time.monotonic() + DEADLINE_S
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [
        results.get(name)
        or Probe(name, PROBES[name][0], False, DEADLINE_S * 1000, f"no answer in {DEADLINE_S} s")
        for name in names
    ]


def require(settings: Settings, names: tuple[str, ...] = tuple(PROBES)) -> None:
    """Fail fast at process start with a one-line error that names the variable."""
    for result in check_dependencies(settings, names):
        if not result.ok:
            hint = ""
            if result.name == "redis":
                hint = " (start one with `make up`, or a local `redis-server`)"
            raise ConfigError(result.variable, f"{result.name} unreachable: {result.error}{hint}")

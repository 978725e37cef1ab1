"""Probes of every dependency: used at process start (fail fast) and by ``GET /health``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from kombu import Connection

from orchestrator.db.session import Database
from orchestrator.errors import ConfigError
from orchestrator.settings import Settings
from orchestrator.storage import ObjectStore


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
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _broker(settings: Settings) -> None:
    with Connection(settings.broker_url, connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


def _database(settings: Settings) -> None:
    database = Database(settings)
    try:
        database.ping()
    finally:
        database.dispose()


def _storage(settings: Settings) -> None:
    ObjectStore(settings).ping()


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
    return [probe(settings, name) for name in names]


def require(settings: Settings, names: tuple[str, ...] = tuple(PROBES)) -> None:
    """Fail fast at process start with a one-line error that names the variable."""
    for result in check_dependencies(settings, names):
        if not result.ok:
            hint = ""
            if result.name == "redis":
                hint = " (start one with `make up`, or a local `redis-server`)"
            raise ConfigError(result.variable, f"{result.name} unreachable: {result.error}{hint}")

"""Private services a test session may start and kill: ``redis-server`` and ``weed mini`` on
free loopback ports, so concurrent sessions (and fault injection) never share or stop each
other's servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from orchestrator.errors import OrchestratorError
from orchestrator.storage.embedded import write_identities

#: Errors a test loop rides out while a service it killed comes back.
OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, OrchestratorError, OSError)


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free now (held open together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def end(process: subprocess.Popen[bytes] | None, sig: int) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class RedisServer:
    """A private ``redis-server`` without persistence: a restart loses everything in it."""

    def __init__(self, directory: Path) -> None:
        self.port = free_ports(1)[0]
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                *("--dir", str(self.directory)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis-server did not start; see {self.directory}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; what it held is gone."""
        end(self.process, signal.SIGKILL)

    def stop(self) -> None:
        end(self.process, signal.SIGTERM)


class WeedServer:
    """A private ``weed mini`` on its own directory with every port off the defaults."""

    NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3")
    NAMES += ("s3_grpc", "admin", "admin_grpc", "metrics", "s3_metrics")

    def __init__(self, directory: Path, access_key: str, secret_key: str) -> None:
        self.directory = directory
        self.ports = dict(zip(self.NAMES, free_ports(len(self.NAMES)), strict=True))
        self.access_key, self.secret_key = access_key, secret_key
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3']}"

    def start(self, ready: Callable[[], None]) -> None:
        """Start (again, on the same directory and ports) and return once ``ready`` passes."""
        self.directory.mkdir(parents=True, exist_ok=True)
        config = write_identities(self.directory, self.access_key, self.secret_key)
        p = self.ports
        weed = Path(sys.executable).with_name("weed")
        log = (self.directory / "weed.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(weed),
                "mini",
                f"-dir={self.directory}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-metricsIp=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-master.port={p['master']}",
                f"-master.port.grpc={p['master_grpc']}",
                f"-volume.port={p['volume']}",
                f"-volume.port.grpc={p['volume_grpc']}",
                f"-filer.port={p['filer']}",
                f"-filer.port.grpc={p['filer_grpc']}",
                f"-s3.port={p['s3']}",
                f"-s3.port.grpc={p['s3_grpc']}",
                f"-admin.port={p['admin']}",
                f"-admin.port.grpc={p['admin_grpc']}",
                f"-metricsPort={p['metrics']}",
                f"-s3.metricsPort={p['s3_metrics']}",
                f"-s3.config={config}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"private weed mini exited; see {self.directory}/weed.log")
            try:
                ready()
                return
            except OUTAGE_ERRORS:
                time.sleep(0.3)
        raise RuntimeError(f"private weed mini not ready in 90 s; see {self.directory}")

    def stop(self) -> None:
        end(self.process, signal.SIGTERM)

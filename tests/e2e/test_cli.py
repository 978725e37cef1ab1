"""The ``orchestrator`` CLI against a real API process and, locally, on the suite's services."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from orchestrator.settings import Settings
from tests.e2e.conftest import Api, run_cli

#: A Redis DB of its own: the suite's worker fleet listens on the suite's DB.
LONELY_REDIS = "redis://127.0.0.1:6379/13"


def cli(*args: str, settings: Settings | None = None) -> subprocess.CompletedProcess[str]:
    env = settings.to_env() if settings is not None else {}
    if settings is not None:
        env["ORCH_S3_ENDPOINT"] = settings.s3_endpoint
    return run_cli(*args, **env)


def test_run_through_the_api_follows_the_sse_stream_to_the_end(api_server: Api) -> None:
    remote = ("--api", api_server.url, "--key", api_server.keys["client"])
    result = cli("run", "linear5", "-p", "start=10", *remote)
    assert result.returncode == 0, result.stdout + result.stderr
    execution_id = re.search(r"submitted: (exec_\w+)", result.stdout).group(1)
    assert f"linear5 {execution_id}: completed" in result.stdout
    for stage in ("s1", "s2", "s3", "s4", "s5"):
        assert re.search(rf"{stage}\s.*100%", result.stdout), stage
    status = cli("status", execution_id, *remote)
    assert status.returncode == 0 and "completed" in status.stdout
    listing = cli("status", *remote)
    assert execution_id in listing.stdout
    estimate = cli("estimate", "linear5", "-p", "start=1", *remote)
    assert estimate.returncode == 0 and "feasible" in estimate.stdout


def test_api_errors_are_one_line(api_server: Api) -> None:
    remote = ("--api", api_server.url, "--key", api_server.keys["client"])
    unknown = cli("run", "no_such_template", *remote)
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "API 404" in unknown.stderr and "no_such_template" in unknown.stderr
    bad_key = cli("status", "--api", api_server.url, "--key", "nope")
    assert bad_key.returncode == 1 and "API 401" in bad_key.stderr
    no_key = cli("status", "--api", api_server.url)
    assert no_key.returncode == 2 and "--key" in no_key.stderr


def test_local_run_status_and_a_cancel_conflict(e2e_settings: Settings, api_server: Api) -> None:
    result = cli("run", "diamond", settings=e2e_settings)
    assert result.returncode == 0, result.stdout + result.stderr
    execution_id = re.search(r"submitted: (exec_\w+)", result.stdout).group(1)
    assert "completed" in result.stdout and "cost $" in result.stdout
    again = cli("cancel", execution_id, settings=e2e_settings)
    assert again.returncode == 1 and "already completed" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_a_run_nobody_serves_says_so_and_gives_up_cleanly(
    e2e_settings: Settings, tmp_path: Path
) -> None:
    env = e2e_settings.to_env()
    env.update(
        ORCH_S3_ENDPOINT=e2e_settings.s3_endpoint,
        ORCH_DATABASE_URL=f"sqlite:///{tmp_path / 'lonely.db'}",
        ORCH_REDIS_URL=LONELY_REDIS,  # a broker no worker listens on
        ORCH_BROKER_URL=LONELY_REDIS,
    )
    redis.Redis.from_url(LONELY_REDIS).flushdb()
    assert run_cli("migrate", **env).returncode == 0
    result = run_cli("run", "linear5", "--timeout", "3", **env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no worker serves coordinator, sum" in result.stdout
    assert "still running after 3.0 s" in result.stderr
    redis.Redis.from_url(LONELY_REDIS).flushdb()  # the message nobody took


def test_version() -> None:
    from orchestrator import __version__

    result = run_cli("--version")
    assert (
        result.returncode == 0 and result.stdout.strip() == f"orchestrator, version {__version__}"
    )


def test_the_api_from_the_environment_and_ids_never_cut(api_server: Api) -> None:
    env = {"ORCH_API_URL": api_server.url, "ORCH_API_KEY": api_server.keys["client"]}
    ran = run_cli("run", "diamond", "--json", **env)
    assert ran.returncode == 0, ran.stderr
    execution_id = json.loads(ran.stdout)["execution_id"]
    narrow = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "status", "--limit", "5"],
        env={**os.environ, **env, "COLUMNS": "40"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert narrow.returncode == 0, narrow.stderr
    assert execution_id in narrow.stdout  # whole, on one line, however narrow the terminal
    cancelled = run_cli("cancel", execution_id, "--json", **env)
    assert cancelled.returncode == 1 and "API 409 conflict" in cancelled.stderr


def test_keys_list_and_revoke(e2e_settings: Settings, api_server: Api) -> None:
    from orchestrator.client import Client, Unauthorized

    made = cli(
        "keys", "create", "--scope", "client", "--client-id", "k-test", settings=e2e_settings
    )
    key = made.stdout.strip()
    with Client(api_server.url, key) as client:
        assert client.templates.list()
    listed = json.loads(cli("keys", "list", "--json", settings=e2e_settings).stdout)["keys"]
    [row] = [k for k in listed if k["client_id"] == "k-test"]
    assert row["scope"] == "client" and row["revoked_at"] is None
    assert key not in json.dumps(listed)  # never a secret
    revoked = cli("keys", "revoke", row["key_id"], settings=e2e_settings)
    assert revoked.returncode == 0 and row["key_id"] in revoked.stdout
    with pytest.raises(Unauthorized), Client(api_server.url, key) as client:
        client.templates.list()
    table = cli("keys", "list", settings=e2e_settings)
    assert row["key_id"] in table.stdout
    unknown = cli("keys", "revoke", "nope", settings=e2e_settings)
    assert unknown.returncode == 1 and "no API key" in unknown.stderr

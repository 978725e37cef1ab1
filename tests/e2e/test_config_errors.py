"""Bad configuration ends a process with one line naming the variable, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import run_cli


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout_s=60, **env)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ORCH_REDIS_URL": "localhost:6379"}, "ORCH_REDIS_URL"),
        ({"ORCH_DATABASE_URL": "oracle://db/x"}, "ORCH_DATABASE_URL"),
        ({"ORCH_S3_ENDPOINT": "https://minio"}, "ORCH_S3_ENDPOINT"),
    ],
)
def test_malformed_value_is_one_line(env: dict[str, str], variable: str) -> None:
    result = _run(["migrate"], **env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {variable}: "), result.stderr


@pytest.mark.parametrize("command", [["worker", "--type", "coordinator"], ["demo"]])
def test_unreachable_redis_is_one_line_with_a_hint(tmp_path: Path, command: list[str]) -> None:
    result = _run(
        command,
        ORCH_REDIS_URL="redis://127.0.0.1:1/0",
        ORCH_DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ORCH_REDIS_URL: redis unreachable")
    assert "make up" in lines[0]


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = _run(["migrate"], ORCH_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ORCH_DATABASE_URL: "), result.stderr


def _bare_celery_worker(**env: str) -> subprocess.CompletedProcess[str]:
    """``celery -A orchestrator.celery_app worker``, as any Celery user starts one."""
    import os
    import sys

    from tests.live import ROOT

    environment = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "orchestrator.celery_app", "worker", "-c", "1"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bare_celery_worker_names_a_bad_resources_file(tmp_path: Path) -> None:
    pool = tmp_path / "resources.yaml"
    pool.write_text("resources:\n  llm_tokens:\n    daily_quota: -5\n")
    result = _bare_celery_worker(ORCH_RESOURCES_FILE=str(pool))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {pool}: resources.llm_tokens.daily_quota: Extra inputs are not permitted"
    ]


@pytest.mark.parametrize("command", ["bare celery", "orchestrator worker"])
def test_a_worker_module_that_does_not_exist_is_named(command: str) -> None:
    env = {"ORCH_WORKER_MODULES": "workers,no_such_workers.pkg"}
    if command == "bare celery":
        result = _bare_celery_worker(**env)
    else:
        result = _run(["worker", "--type", "echo"], **env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ORCH_WORKER_MODULES: no module named 'no_such_workers.pkg'")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["api", "--port", "99999"], "--port"),
        (["api", "--workers", "0"], "--workers"),
        (["estimates", "accuracy", "--last", "-5"], "--last"),
        (["estimates", "accuracy", "--last", "0"], "--last"),
        (["status", "--limit", "0"], "--limit"),
        (["worker", "--type", "echo", "-c", "0"], "--concurrency"),
        (["templates", "export", "x", "--version", "0"], "--version"),
        (["run", "x", "--timeout", "-1"], "--timeout"),
    ],
)
def test_an_option_out_of_range_is_refused_by_name(args: list[str], option: str) -> None:
    result = _run(args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Invalid value for '{option}'" in result.stderr or option in result.stderr


def test_a_client_id_too_long_for_the_database_is_refused(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'keys.db'}"
    assert _run(["migrate"], ORCH_DATABASE_URL=database).returncode == 0
    result = _run(
        ["keys", "create", "--scope", "client", "--client-id", "x" * 5000],
        ORCH_DATABASE_URL=database,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: --client-id must be 1 to 200 printable characters, without spaces around "
        "them (got 5000 characters)"
    )

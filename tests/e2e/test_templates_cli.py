"""``orchestrator templates push | export | sync`` on the suite's services and through the API."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from orchestrator.settings import Settings
from tests.e2e.conftest import Api, run_cli

PIPELINE = """
from orchestrator.sdk.pipeline import Pipeline

pipeline = Pipeline("{name}", description="written in Python")
start = pipeline.parameter("start", "integer", default=1)
first = pipeline.stage("first", "sum", "add", params={{"value": start}})
pipeline.stage("second", "sum", "add", depends_on=[first], params={{"value": {step}}})
"""


def local(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {**settings.to_env(), "ORCH_S3_ENDPOINT": settings.s3_endpoint}
    result = run_cli(*args, **env)
    return result.returncode, result.stdout, result.stderr


def test_push_a_python_pipeline_export_it_and_sync_it_back(
    e2e_settings: Settings, api_server: Api, tmp_path: Path
) -> None:
    name = f"coded_{uuid.uuid4().hex[:8]}"
    module = tmp_path / "coded.py"
    module.write_text(PIPELINE.format(name=name, step=1))
    code, out, err = local(e2e_settings, "templates", "push", f"{module}:pipeline")
    assert code == 0, err
    assert out.strip() == f"{name} v1: added"
    again = local(e2e_settings, "templates", "push", f"{module}:pipeline", "--json")
    assert json.loads(again[1]) == {"name": name, "version": 1, "created": False}
    # It runs like any template, through the API.
    ran = api_server.call(
        "POST", "/execute", json={"request_id": name, "template_name": name, "parameters": {}}
    )
    assert ran.status_code == 202, ran.text

    code, exported, err = local(e2e_settings, "templates", "export", name)
    assert code == 0, err
    assert "written in Python" in exported and "depends_on:\n  - first" in exported
    folder = tmp_path / "synced"
    folder.mkdir()
    (folder / f"{name}.yaml").write_text(exported)
    code, out, err = local(e2e_settings, "templates", "sync", str(folder))
    assert code == 0 and out.strip() == f"{name}.yaml: {name} v1 unchanged", err


def test_sync_reports_what_changed_and_refuses_a_broken_file_only(
    e2e_settings: Settings, api_server: Api, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    good, other, broken = f"good_{tag}", f"other_{tag}", f"broken_{tag}"
    stage = "stages:\n  - {id: a, worker: sum, action: add, params: {value: %d}}\n"
    (tmp_path / f"{good}.yaml").write_text(f"name: {good}\n" + stage % 1)
    (tmp_path / f"{other}.yaml").write_text(f"name: {other}\n" + stage % 1)
    (tmp_path / f"{broken}.yaml").write_text(f"name: {broken}\nstages: [{{id: a, worker: sum")
    code, out, err = local(e2e_settings, "templates", "sync", str(tmp_path))
    assert code == 1
    assert f"{good}.yaml: {good} v1 added" in out and f"{other}.yaml: {other} v1 added" in out
    assert f"{broken}.yaml: invalid: {broken}.yaml:2: invalid YAML" in err
    # Change one: only it gets a new version; through the API, with an admin key.
    (tmp_path / f"{good}.yaml").write_text(f"name: {good}\n" + stage % 2)
    (tmp_path / f"{broken}.yaml").write_text(
        f"name: {broken}\n" + (stage % 1).replace("sum", "nobody")
    )
    remote = ("--api", api_server.url, "--key", api_server.keys["admin"])
    result = run_cli("templates", "sync", str(tmp_path), "--json", *remote)
    assert result.returncode == 1
    files = {f["file"]: f for f in json.loads(result.stdout)["files"]}
    assert files[f"{good}.yaml"]["outcome"] == "added" and files[f"{good}.yaml"]["version"] == 2
    assert files[f"{other}.yaml"]["outcome"] == "unchanged"
    assert files[f"{broken}.yaml"]["outcome"] == "invalid"
    assert "unknown worker type 'nobody'" in files[f"{broken}.yaml"]["reason"]

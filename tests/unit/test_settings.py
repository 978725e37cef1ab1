"""Settings: defaults, and every malformed variable named in a one-line error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from orchestrator.cli import OrchestratorGroup, main
from orchestrator.errors import ConfigError
from orchestrator.settings import DEFAULT_REDIS_URL, EMBEDDED_S3_ENDPOINT, Settings


def test_defaults_need_nothing() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url == DEFAULT_REDIS_URL
    assert settings.broker_url == DEFAULT_REDIS_URL
    assert settings.database_url == "sqlite:///var/orchestrator.db"
    assert settings.s3_endpoint == EMBEDDED_S3_ENDPOINT
    assert settings.s3_embedded is True


def test_values_are_read_and_normalised(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "ORCH_DATABASE_URL": "postgresql://u@db:5432/orch",
            "ORCH_REDIS_URL": "redis://cache:6380/2",
            "ORCH_BROKER_URL": "amqp://guest:guest@mq:5672//",
            "ORCH_S3_ENDPOINT": "minio:9000",
            "ORCH_S3_SECURE": "true",
            "ORCH_S3_BUCKET": "Reports",
            "ORCH_TEMPLATES_DIR": str(tmp_path),
        }
    )
    assert settings.database_url == "postgresql+psycopg://u@db:5432/orch"
    assert settings.broker_url.startswith("amqp://")
    assert settings.s3_secure is True and settings.s3_embedded is False
    assert settings.s3_bucket == "reports"
    assert settings.templates_dir == tmp_path


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("ORCH_REDIS_URL", "localhost:6379", "not a URL"),
        ("ORCH_REDIS_URL", "redis://localhost:abc/0", "bad port"),
        ("ORCH_DATABASE_URL", "mysql://db/x", "not a URL"),
        ("ORCH_BROKER_URL", "http://mq", "not a URL"),
        ("ORCH_S3_ENDPOINT", "http://minio:9000", "host:port"),
        ("ORCH_S3_ENDPOINT", "minio", "host:port"),
        ("ORCH_S3_SECURE", "maybe", "true or false"),
        ("ORCH_S3_BUCKET", "a", "bucket name"),
        ("ORCH_TEMPLATES_DIR", "/nonexistent/templates", "not a directory"),
        ("ORCH_RESOURCES_FILE", "/nonexistent/resources.yaml", "not a file"),
        ("ORCH_OUTPUT_TTL_S", "-5", "positive integer"),
        ("ORCH_LLM_BASE_URL", "ftp://llm", "not a URL"),
    ],
)
def test_malformed_values_name_the_variable(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert fragment in message
    assert "\n" not in message
    assert caught.value.variable == variable


def test_describe_masks_secrets() -> None:
    described = Settings.from_env({"ORCH_S3_SECRET_KEY": "hunter2"}).describe()
    assert described["s3_secret_key"] == "***"
    assert "hunter2" not in repr(described)


# -- .env in the working directory, and secrets never shown ------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "ORCH_S3_SECRET_KEY": "s3-hunter2-secret",
    "ORCH_LLM_API_KEY": "sk-hunter2-llm",
    "ORCH_DATABASE_URL": "postgresql://orch:db-hunter2-pass@db:5432/orch",
    "ORCH_REDIS_URL": "redis://:redis-hunter2-pass@cache:6379/1",
    "ORCH_BROKER_URL": "amqp://guest:mq-hunter2-pass@mq:5672//",
}
SECRET_VALUES = ("s3-hunter2-secret", "sk-hunter2-llm", "db-hunter2", "redis-hunter2", "mq-hunter2")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own, and no ``ORCH_*`` variable in the environment."""
    for name in [n for n in os.environ if n.startswith("ORCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_dotenv_file_in_the_working_directory_is_read(workdir: Path) -> None:
    (workdir / ".env").write_text(
        "# comment\nORCH_LLM_MODEL=from-file\nORCH_S3_BUCKET='Quoted-Bucket'\n"
        "export ORCH_OUTPUT_TTL_S=60\nORCH_S3_SECRET_KEY=s3-hunter2-secret\nOTHER=ignored\n"
    )
    settings = Settings.from_env()
    assert settings.llm_model == "from-file"
    assert settings.s3_bucket == "quoted-bucket"
    assert settings.output_ttl_s == 60
    assert settings.s3_secret_key.get_secret_value() == "s3-hunter2-secret"
    assert "OTHER" not in settings.extra
    # an explicit mapping is all there is: neither the environment nor the file
    assert Settings.from_env({}).llm_model == "gpt-4o-mini"


def test_the_real_environment_wins_over_the_dotenv_file(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / ".env").write_text("ORCH_LLM_MODEL=from-file\nORCH_CORPUS_PORT=9001\n")
    monkeypatch.setenv("ORCH_LLM_MODEL", "from-env")
    settings = Settings.from_env()
    assert settings.llm_model == "from-env"
    assert settings.corpus_port == 9001


def test_no_dotenv_file_is_no_error(workdir: Path) -> None:
    assert Settings.from_env() == Settings.from_env({})


def test_prometheus_dir_is_never_taken_from_the_dotenv_file(workdir: Path) -> None:
    # prometheus_client reads it from the environment itself; the file must not split them
    (workdir / ".env").write_text(f"PROMETHEUS_MULTIPROC_DIR={workdir}\n")
    assert Settings.from_env().metrics_dir is None


def test_a_bad_value_in_the_dotenv_file_is_one_line_naming_it(workdir: Path) -> None:
    (workdir / ".env").write_text("ORCH_LLM_MODEL=fine\nORCH_S3_SECURE=maybe\n")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env()
    message = str(caught.value)
    assert message.startswith("ORCH_S3_SECURE: ") and "\n" not in message
    assert "true or false" in message and ".env" in message
    assert caught.value.variable == "ORCH_S3_SECURE"


def test_secrets_are_secret_str_and_rebuild_a_child() -> None:
    settings = Settings.from_env(SECRETS)
    assert isinstance(settings.s3_secret_key, SecretStr)
    assert settings.llm_api_key.get_secret_value() == "sk-hunter2-llm"
    assert "db-hunter2-pass" in settings.database_url  # URLs stay plain strings for clients
    child = Settings.from_env(settings.to_env())
    assert child.s3_secret_key == settings.s3_secret_key
    assert child.llm_api_key == settings.llm_api_key
    assert child.redis_url == settings.redis_url and child.broker_url == settings.broker_url
    # a plain string given in code (tests, overrides) becomes a SecretStr too
    overridden = settings.with_overrides(llm_api_key="sk-other")
    assert overridden.llm_api_key == SecretStr("sk-other")
    assert Settings(s3_secret_key="x") == Settings(s3_secret_key=SecretStr("x"))  # type: ignore[arg-type]


def test_repr_str_and_describe_never_show_a_secret() -> None:
    settings = Settings.from_env(SECRETS)
    for shown in (repr(settings), str(settings), f"{settings}", repr(settings.describe())):
        assert not [s for s in SECRET_VALUES if s in shown], shown
    assert "redis://:***@cache:6379/1" in repr(settings)
    assert settings.describe()["llm_api_key"] == "***"
    assert settings.describe()["database_url"] == "postgresql+psycopg://orch:***@db:5432/orch"


@pytest.mark.parametrize(
    "url", ["redis://:redis-hunter2-pass@cache:abc/0", "mysql://u:redis-hunter2-pass@db/x"]
)
def test_a_malformed_url_error_masks_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ORCH_REDIS_URL": url})
    assert "redis-hunter2" not in str(caught.value) and ":***@" in str(caught.value)


def test_cli_error_output_never_shows_a_secret(workdir: Path) -> None:
    """The real console script, in a directory whose ``.env`` holds secrets and a bad URL."""
    (workdir / ".env").write_text(
        "ORCH_S3_SECRET_KEY=s3-hunter2-secret\n"
        "ORCH_DATABASE_URL=postgresql://orch:db-hunter2-pass@db:notaport/orch\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    environment.update(PYTHONPATH=str(ROOT), ORCH_LLM_API_KEY="sk-hunter2-llm")
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "migrate"],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ORCH_DATABASE_URL: "), result.stderr
    assert not [s for s in SECRET_VALUES if s in result.stdout + result.stderr]


def test_cli_errors_raised_after_start_have_the_secrets_replaced(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_S3_SECRET_KEY", "s3-hunter2-secret")

    @click.command("leaky")
    def leaky() -> None:
        raise ConfigError("ORCH_S3_SECRET_KEY", "rejected 's3-hunter2-secret'")

    group = OrchestratorGroup("orchestrator", commands=[leaky], callback=main.callback)
    result = CliRunner().invoke(group, ["leaky"])
    assert result.exit_code == 1
    assert "s3-hunter2" not in result.output and "[redacted]" in result.output

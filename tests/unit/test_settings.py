"""Settings: defaults, and every malformed variable named in a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest

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

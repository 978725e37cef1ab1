"""Fixtures on real services: Redis, PostgreSQL, the embedded S3 server.

Each developer (or parallel run) may pick private resources with ``ORCH_TEST_REDIS_DB``,
``ORCH_TEST_DATABASE`` and ``ORCH_TEST_S3_BUCKET``; the defaults stay away from the demo's
Redis DB 0 and SQLite file. On CI a missing service fails the run; locally it skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import text

from orchestrator.db import Base, Database
from orchestrator.settings import Settings
from orchestrator.storage.objects import ObjectStore
from tests.services import WeedServer

ROOT = Path(__file__).resolve().parent.parent
CI = os.environ.get("CI") == "true"
REDIS_DB = int(os.environ.get("ORCH_TEST_REDIS_DB", "15"))
PG_DATABASE = os.environ.get("ORCH_TEST_DATABASE", "orchestrator_test")
PG_ADMIN_URL = os.environ.get("ORCH_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
S3_BUCKET = os.environ.get("ORCH_TEST_S3_BUCKET", "orch-test")

#: The live stack's fixtures (fleet, API process), registered once for every tier that uses them.
pytest_plugins = ("tests.live",)


def _unavailable(what: str, exc: Exception) -> None:
    if CI:
        raise RuntimeError(f"{what} is required on CI: {exc}") from exc
    pytest.skip(f"{what} unavailable: {exc}")


def ensure_pg_database(name: str) -> str:
    """Create database ``name`` if missing; return its SQLAlchemy URL."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
def weed(data_dir: Path) -> WeedServer:
    """The session's own ``weed mini`` (started by ``s3_server``): on free ports, so sessions
    running side by side never share one, nor stop one another's."""
    defaults = Settings()
    secret_key = defaults.s3_secret_key.get_secret_value()
    return WeedServer(data_dir / "s3", defaults.s3_access_key, secret_key)


@pytest.fixture(scope="session")
def settings(data_dir: Path, weed: WeedServer) -> Settings:
    """Settings for the suite: private Redis DB, PostgreSQL database, S3 server and bucket."""
    try:
        database_url = ensure_pg_database(PG_DATABASE)
    except psycopg.OperationalError as exc:
        _unavailable("PostgreSQL", exc)
    return Settings.from_env({}).with_overrides(
        s3_endpoint=weed.endpoint,
        s3_embedded=False,
        data_dir=data_dir,
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
        broker_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
        s3_bucket=S3_BUCKET,
        templates_dir=ROOT / "templates",
        resources_file=ROOT / "resources.yaml",
        worker_modules=("workers", "workers.testing"),  # the reference types and the test ones
        allow_private_urls=True,
    )


@pytest.fixture(scope="session")
def s3_server(settings: Settings, weed: WeedServer) -> Iterator[WeedServer]:
    """The session's SeaweedFS, up until the session ends."""
    weed.start(lambda: ObjectStore(settings).ping())
    yield weed
    weed.stop()


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """A real Redis on the suite's private DB, flushed before and after each test."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        _unavailable("Redis", exc)
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[Database]:
    """The suite's PostgreSQL database, emptied once and migrated to head."""
    db = Database(settings)
    Base.metadata.drop_all(db.engine)
    with db.engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    from orchestrator.ops.migrations import upgrade

    upgrade(settings)  # the schema as the migrations make it, as production gets it
    yield db
    db.dispose()


#: Tables ``db`` keeps: the keys of the session's API process (tests/live.py) must stay valid
#: for the tiers that run after a test that empties the database.
KEPT_TABLES = {"api_keys"}


@pytest.fixture
def db(database: Database) -> Iterator[Database]:
    """``database`` with every table emptied before the test (but the API keys)."""
    with database.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name not in KEPT_TABLES:
                connection.execute(table.delete())
    yield database


@pytest.fixture
def object_store(settings: Settings, s3_server: WeedServer) -> ObjectStore:
    return ObjectStore(settings)

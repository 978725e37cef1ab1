"""Alembic up and down on PostgreSQL and SQLite, and no drift between models and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from orchestrator.db import Base
from orchestrator.ops import migrations
from orchestrator.settings import Settings
from tests.conftest import PG_DATABASE, ensure_pg_database

PLAN_TABLES = {
    "pipeline_executions": {
        "execution_id",
        "request_id",
        "client_id",
        "template_name",
        "status",
        "started_at",
        "completed_at",
        "total_cost_usd",
        "total_time_ms",
        "created_at",
    },
    "stage_executions": {
        "stage_id",
        "execution_id",
        "worker_name",
        "stage_order",
        "status",
        "data_reference",
        "summary_data",
        "cost_usd",
        "time_ms",
        "started_at",
        "completed_at",
    },
    "resource_usage": {
        "usage_id",
        "resource_type",
        "resource_name",
        "execution_id",
        "quantity_used",
        "timestamp",
    },
    "worker_registry": {
        "worker_name",
        "display_name",
        "capabilities",
        "resource_requirements",
        "avg_execution_time_ms",
        "avg_cost_usd",
        "health_status",
        "last_health_check",
    },
}
PRODUCT_TABLES = {"templates", "deliverables", "api_keys"}


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    url = ensure_pg_database(f"{PG_DATABASE}_migrations")
    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    engine.dispose()
    yield url


def test_upgrade_creates_the_plan_tables_and_downgrade_removes_them(
    settings: Settings, database_url: str
) -> None:
    target = settings.with_overrides(database_url=database_url)
    migrations.upgrade(target)
    engine = create_engine(database_url)
    try:
        inspector = inspect(engine)
        tables = set(inspector.get_table_names())
        assert set(PLAN_TABLES) | PRODUCT_TABLES <= tables
        for table, columns in PLAN_TABLES.items():
            assert columns <= {c["name"] for c in inspector.get_columns(table)}, table
        indexes = {i["name"] for i in inspector.get_indexes("pipeline_executions")}
        assert "ix_executions_client_status" in indexes
        assert "ix_stages_execution" in {
            i["name"] for i in inspector.get_indexes("stage_executions")
        }
        with engine.connect() as connection:
            drift = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert drift == [], f"models and migrations disagree: {drift}"
        hashed = {c["name"] for c in inspector.get_columns("api_keys")}
        assert "key_hash" in hashed and "key" not in hashed
    finally:
        engine.dispose()

    migrations.downgrade(target)
    engine = create_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()

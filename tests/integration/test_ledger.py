"""The usage ledger: a stage's usage is written once per key, in one statement, on
PostgreSQL and on SQLite alike (the zero-setup default)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from orchestrator.db import Database, ResourceUsage
from orchestrator.engine.ledger import Usage, record_usages, usage_totals
from orchestrator.ops.migrations import upgrade
from orchestrator.settings import Settings


@pytest.fixture(params=["postgresql", "sqlite"])
def ledger_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The suite's PostgreSQL database with an empty ledger (its other tables, the test
    templates the live tiers use among them, untouched), or a fresh SQLite file."""
    if request.param == "postgresql":
        database = request.getfixturevalue("database")
        with database.session() as session:
            session.execute(delete(ResourceUsage))
        yield database
        return
    settings = request.getfixturevalue("settings").with_overrides(
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}"
    )
    assert isinstance(settings, Settings)
    upgrade(settings)
    database = Database(settings)
    yield database
    database.dispose()


def usage(resource: str, quantity: float, stage: str = "a") -> Usage:
    return Usage(
        execution_id="run",
        stage_id=f"run.{stage}",
        resource=resource,
        quantity=quantity,
        cost_usd=quantity * 0.01,
        idempotency_key=f"run:{stage}:{resource}",
    )


def rows(database: Database) -> list[tuple[str, str, float]]:
    with database.session() as session:
        found = session.execute(
            select(
                ResourceUsage.idempotency_key,
                ResourceUsage.resource_name,
                ResourceUsage.quantity_used,
            ).order_by(ResourceUsage.idempotency_key)
        ).all()
    return [tuple(row) for row in found]


def test_a_stages_usages_are_written_once_per_key(ledger_db: Database) -> None:
    written = record_usages(ledger_db, [usage("openai_api", 120), usage("feed_requests", 3)])
    assert written == {"run:a:openai_api", "run:a:feed_requests"}

    # The stage redelivered: the same keys write nothing, a new key still does.
    again = record_usages(ledger_db, [usage("openai_api", 999), usage("email_quota", 1)])
    assert again == {"run:a:email_quota"}
    assert rows(ledger_db) == [
        ("run:a:email_quota", "email_quota", 1.0),
        ("run:a:feed_requests", "feed_requests", 3.0),
        ("run:a:openai_api", "openai_api", 120.0),
    ]
    assert record_usages(ledger_db, []) == set()


def test_the_totals_count_a_redelivered_stage_once(ledger_db: Database) -> None:
    once = usage("openai_api", 50, stage="b")
    assert record_usages(ledger_db, [once]) == {"run:b:openai_api"}
    assert record_usages(ledger_db, [once]) == set()
    with ledger_db.session() as session:
        stamped = session.scalars(select(ResourceUsage.timestamp)).one()
    now_ms = int(stamped.replace(tzinfo=stamped.tzinfo or UTC).timestamp() * 1000)
    assert usage_totals(ledger_db, now_ms) == {"openai_api": (50.0, 50.0)}

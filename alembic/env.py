"""Alembic environment: the URL comes from ``Settings`` (or ``-x url=...``), never from ini."""

from __future__ import annotations

from sqlalchemy import engine_from_config, pool

from alembic import context
from orchestrator.db.models import Base
from orchestrator.settings import Settings

config = context.config
url = context.get_x_argument(as_dictionary=True).get("url") or config.attributes.get("url")
if not url:
    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.database_url
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    engine = engine_from_config(
        {"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        _run(connection)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""Alembic, driven from code: ``orchestrator migrate`` and the test suite use the same path."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command
from orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _config(settings: Settings) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["url"] = settings.database_url
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    command.upgrade(_config(settings), revision)


def downgrade(settings: Settings, revision: str = "base") -> None:
    command.downgrade(_config(settings), revision)

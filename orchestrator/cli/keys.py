"""``orchestrator keys create``: make an API key and print it, once."""

from __future__ import annotations

import click

from orchestrator.auth import Scope, create_key
from orchestrator.settings import Settings


@click.group()
def keys() -> None:
    """API keys (stored hashed; shown once)."""


@keys.command()
@click.option("--scope", type=click.Choice([s.value for s in Scope]), required=True)
@click.option("--client-id", default=None, help="the client (or worker) the key speaks for")
@click.option("--label", default=None)
@click.pass_obj
def create(settings: Settings, scope: str, client_id: str | None, label: str | None) -> None:
    """Create a key and print it (it cannot be shown again)."""
    from orchestrator.db import Database
    from orchestrator.ops.health import require

    require(settings, ("database",))
    click.echo(create_key(Database(settings), Scope(scope), client_id=client_id, label=label))


COMMANDS = [keys]

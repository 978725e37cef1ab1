"""``orchestrator keys create | list | revoke``: API keys (stored hashed, shown once)."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from orchestrator.auth import Scope, create_key, list_keys, revoke_key
from orchestrator.cli.remote import echo_json, json_option
from orchestrator.db import Database
from orchestrator.settings import Settings


def _database(settings: Settings) -> Database:
    from orchestrator.ops.health import require

    require(settings, ("database",))
    return Database(settings)


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
    click.echo(create_key(_database(settings), Scope(scope), client_id=client_id, label=label))


@keys.command(name="list")
@json_option
@click.pass_obj
def list_(settings: Settings, as_json: bool) -> None:
    """Every key: id, scope, client, label, when made, last used, revoked (never a secret)."""
    rows = list_keys(_database(settings))
    if as_json:
        echo_json({"keys": rows})
        return
    table = Table(title="API keys")
    table.add_column("key id", no_wrap=True, min_width=16)
    for column in ("scope", "client", "label", "created", "last used", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["key_id"],
            row["scope"],
            row["client_id"] or "",
            row["label"] or "",
            *((row[k] or "")[:19].replace("T", " ") for k in ("created_at", "last_used_at")),
            (row["revoked_at"] or "")[:19].replace("T", " "),
        )
    Console().print(table)


@keys.command()
@click.argument("key")
@click.pass_obj
def revoke(settings: Settings, key: str) -> None:
    """Revoke KEY (its id from `keys list`, or the key itself): it stops working at once."""
    click.echo(f"revoked {revoke_key(_database(settings), key)}")


COMMANDS = [keys]

"""The ``orchestrator`` console script: one click group, one module per family of commands."""

from __future__ import annotations

import sys
from typing import NoReturn

import click
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from orchestrator import __version__
from orchestrator.errors import OrchestratorError
from orchestrator.logs import REDACTED, secrets_of
from orchestrator.settings import Settings


class OrchestratorGroup(click.Group):
    """Turns every product error into a one-line message and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except OrchestratorError as exc:
            _fail(ctx, f"error: {exc}")
        except (RedisError, SQLAlchemyError, OSError) as exc:  # a dependency went away mid-run
            _fail(ctx, f"error: {exc.__class__.__name__}: {exc}")


def _fail(ctx: click.Context, message: str) -> NoReturn:
    """Print the one line, any configured secret in it replaced, and exit 1."""
    if isinstance(ctx.obj, Settings):
        for secret in secrets_of(ctx.obj):
            message = message.replace(secret, REDACTED)
    click.secho(message, fg="red", err=True)
    sys.exit(1)


@click.group(cls=OrchestratorGroup)
@click.version_option(__version__, "--version", "-V", prog_name="orchestrator")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Orchestrator: pipelines of expensive stages on Celery, with quotas reserved up front."""
    ctx.obj = Settings.from_env()


def _register_commands() -> None:
    from orchestrator.cli import api, demo, executions, keys, run, services, templates

    for module in (services, run, executions, templates, api, keys, demo):
        for command in module.COMMANDS:
            main.add_command(command)


_register_commands()

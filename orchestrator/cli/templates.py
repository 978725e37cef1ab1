"""``orchestrator templates push | export | sync``: templates as code and as files.

``push module:attribute`` registers a template written in Python (a ``Pipeline`` or a
``Template``); ``export NAME`` prints a registered one as YAML, which ``sync DIR`` (or a
YAML ``push``) registers back unchanged. Locally they use this process's database; with
``--api``/``ORCH_API_URL`` (an admin key to add versions) they go through the API.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Literal

import click

from orchestrator import template_registry
from orchestrator.cli.remote import api_client, echo_json, json_option, with_api_options
from orchestrator.client import ApiError
from orchestrator.core.templates import Template, parse_template
from orchestrator.errors import ValidationFailed
from orchestrator.settings import Settings


def _runtime(settings: Settings) -> Any:
    from orchestrator.ops.health import require
    from orchestrator.runtime import Runtime

    require(settings, ("redis", "database"))
    return Runtime(settings)


def load_template(target: str) -> Template:
    """``module:attribute`` (or ``path/to/file.py:attribute``) as a validated ``Template``."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise click.BadParameter(f"expected module:attribute, got {target!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        sys.path.insert(0, str(path.parent.resolve()))
        module_name = path.stem
    elif "" not in sys.path:
        sys.path.insert(0, "")  # a module of the working directory, as `python -m` finds it
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from None
    value = getattr(module, attribute, None)
    if value is None:
        raise click.BadParameter(f"{module_name!r} has no attribute {attribute!r}")
    if hasattr(value, "build"):
        value = value.build()
    if isinstance(value, dict):
        value = parse_template(value)
    if not isinstance(value, Template):
        kind = type(value).__name__
        raise click.BadParameter(f"{target} is a {kind}, not a Pipeline or Template")
    return value


@click.group()
def templates() -> None:
    """Pipeline templates: push one written in Python, export as YAML, sync a folder."""


@templates.command()
@click.argument("target")
@json_option
@with_api_options
@click.pass_obj
def push(
    settings: Settings, target: str, as_json: bool, api_url: str | None, api_key: str | None
) -> None:
    """Register TARGET (module:attribute, a Pipeline or Template) as a new version if changed."""
    from orchestrator.sdk import load_worker_modules

    load_worker_modules(settings.worker_modules)  # the worker types a pipeline names by name
    template = load_template(target)
    client = api_client(api_url, api_key)
    if client is not None:
        result = client.templates.push(template)
    else:
        runtime = _runtime(settings)
        row, added = template_registry.put(
            runtime.db,
            template,
            template_registry.known_workers(runtime),
            source=template_registry.to_yaml(template),
            created_by=f"cli:{target}",
        )
        result = {"name": row.name, "version": row.version, "created": added}
    if as_json:
        echo_json(result)
    else:
        state = "added" if result["created"] else "unchanged"
        click.echo(f"{result['name']} v{result['version']}: {state}")


@templates.command()
@click.argument("name")
@click.option(
    "--version", "version", type=click.IntRange(min=1), default=None, help="a given version"
)
@with_api_options
@click.pass_obj
def export(
    settings: Settings, name: str, version: int | None, api_url: str | None, api_key: str | None
) -> None:
    """Print template NAME as YAML (what `templates sync` or a YAML file registers back)."""
    client = api_client(api_url, api_key)
    if client is not None:
        template = Template.model_validate(client.templates.get(name, version)["definition"])
    else:
        template = template_registry.get(_runtime(settings).db, name, version)
    click.echo(template_registry.to_yaml(template), nl=False)


@templates.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@json_option
@with_api_options
@click.pass_obj
def sync(
    settings: Settings,
    directory: Path,
    as_json: bool,
    api_url: str | None,
    api_key: str | None,
) -> None:
    """Register every changed *.yaml of DIRECTORY as a new version and say what changed; an
    invalid file is refused (named, with the reason) and the others are synced."""
    client = api_client(api_url, api_key)
    if client is not None:
        results = [_push_file(client, path) for path in sorted(directory.glob("*.yaml"))]
    else:
        runtime = _runtime(settings)
        known = template_registry.known_workers(runtime)
        results = template_registry.sync_files(runtime.db, directory, known)
    if as_json:
        echo_json({"files": [vars(r) for r in results]})
    else:
        for r in results:
            if r.outcome == "invalid":
                click.secho(f"{r.file}: invalid: {r.reason}", fg="red", err=True)
            else:
                click.echo(f"{r.file}: {r.name} v{r.version} {r.outcome}")
    if any(r.outcome == "invalid" for r in results):
        raise SystemExit(1)


def _push_file(client: Any, path: Path) -> template_registry.FileSync:
    """One file through ``PUT /templates/{name}``, as ``sync_files`` does it locally."""
    try:
        text = path.read_text()
        template = template_registry.parse_yaml(text, source=path.name)
        if template.name != path.stem:
            raise ValidationFailed(f"name {template.name!r} must match the file name")
        answer = client.templates.push(text)
    except (ValidationFailed, OSError, UnicodeDecodeError) as exc:
        reason = exc.message if isinstance(exc, ValidationFailed) else str(exc)
        return template_registry.FileSync(path.name, "invalid", reason=reason)
    except ApiError as exc:
        if exc.status != 422:
            raise
        return template_registry.FileSync(path.name, "invalid", reason=exc.message)
    outcome: Literal["added", "unchanged"] = "added" if answer["created"] else "unchanged"
    return template_registry.FileSync(path.name, outcome, answer["name"], answer["version"])


COMMANDS = [templates]

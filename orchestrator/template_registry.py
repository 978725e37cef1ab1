"""Template registry: YAML files and ``PUT /templates`` become numbered versions in the DB.

An unchanged definition adds nothing; a changed one adds version N+1. Executions keep the
version they started with, so editing a template never changes a run under way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.core.templates import BoundStage, Template, bind, check_workers, parse_template
from orchestrator.db import Database, TemplateVersion
from orchestrator.errors import NotFound, ValidationFailed

if TYPE_CHECKING:
    from orchestrator.runtime import Runtime


class _TemplateLoader(yaml.SafeLoader):
    """``SafeLoader`` without aliases: a few hundred bytes of nested ``*refs`` expand to
    gigabytes once loaded, past any limit on the text. A template never needs them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem=f"aliases (*{event.anchor}) are not allowed in templates; "
                "write the value out",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def parse_yaml(text: str, *, source: str = "template") -> Template:
    """Parse YAML text into a validated template; syntax errors name the line."""
    loader = None
    try:
        loader = _TemplateLoader(text)  # its reader already refuses control characters
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ValidationFailed(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:  # PyYAML composes recursively
        raise ValidationFailed(f"{source}: invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return parse_template(data if data is not None else {})


def _latest(session: Any, name: str) -> TemplateVersion | None:
    return session.scalar(
        select(TemplateVersion)
        .where(TemplateVersion.name == name)
        .order_by(TemplateVersion.version.desc())
        .limit(1)
    )


def put(
    database: Database,
    template: Template,
    known_workers: Mapping[str, Iterable[str]],
    *,
    source: str | None = None,
    created_by: str | None = None,
) -> tuple[TemplateVersion, bool]:
    """Validate and store; returns the current version and whether it was added now."""
    check_workers(template, known_workers)
    checksum = template.checksum()
    with database.session() as session:
        latest = _latest(session, template.name)
        if latest is not None and latest.checksum == checksum:
            return latest, False
        version = (latest.version + 1) if latest else 1
        row = TemplateVersion(
            name=template.name,
            version=version,
            definition=template.model_copy(update={"version": version}).model_dump(mode="json"),
            source=source,
            checksum=checksum,
            created_by=created_by,
        )
        session.add(row)
        return row, True


@dataclass(frozen=True)
class FileSync:
    """What syncing one template file did: ``added`` a version, left it ``unchanged``, or
    refused it as ``invalid`` (with the reason)."""

    file: str
    outcome: Literal["added", "unchanged", "invalid"]
    name: str = ""
    version: int = 0
    reason: str = ""


def sync_files(
    database: Database, directory: Path, known_workers: Mapping[str, Iterable[str]]
) -> list[FileSync]:
    """Register every ``*.yaml`` of ``directory`` whose definition changed (as a new
    version); an invalid file is reported and skipped, the others are synced."""
    results = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            text = path.read_text()
            template = parse_yaml(text, source=path.name)
            if template.name != path.stem:
                raise ValidationFailed(f"name {template.name!r} must match the file name")
            row, added = put(database, template, known_workers, source=text, created_by=str(path))
        except (ValidationFailed, OSError, UnicodeDecodeError) as exc:
            reason = exc.message if isinstance(exc, ValidationFailed) else str(exc)
            results.append(FileSync(path.name, "invalid", reason=reason))
            continue
        outcome: Literal["added", "unchanged"] = "added" if added else "unchanged"
        results.append(FileSync(path.name, outcome, row.name, row.version))
    return results


def sync_directory(
    database: Database, directory: Path, known_workers: Mapping[str, Iterable[str]]
) -> list[tuple[str, int, bool]]:
    """``sync_files``, strict: once the valid files are synced, an invalid one raises,
    naming the file and the reason. Returns (name, version, added) per file."""
    results = sync_files(database, directory, known_workers)
    for result in results:
        if result.outcome == "invalid":
            raise ValidationFailed(f"{result.file}: {result.reason}")
    return [(r.name, r.version, r.outcome == "added") for r in results]


def to_yaml(template: Template) -> str:
    """The template as a YAML file would hold it (without the version the registry gives):
    ``parse_yaml`` of it is the same template."""
    body = template.model_dump(mode="json", exclude={"version"}, exclude_defaults=True)
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def get(database: Database, name: str, version: int | None = None) -> Template:
    """The template's given or current version; ``NotFound`` names what is missing."""
    with database.session() as session:
        return read(session, name, version)


def read(session: Session, name: str, version: int | None = None) -> Template:
    """``get`` in the caller's session (the coordinator reads its run and its template in one).

    Every submit and every launch asks: the query reads only the version and checksum, and
    the parsed template comes from a small cache keyed by them (a version, once stored, never
    changes; the checksum tells apart the same name and version in another database)."""
    query = select(TemplateVersion.version, TemplateVersion.checksum).where(
        TemplateVersion.name == name
    )
    query = (
        query.order_by(TemplateVersion.version.desc()).limit(1)
        if version is None
        else query.where(TemplateVersion.version == version)
    )
    found = session.execute(query).first()
    if found is None:
        what = f"template {name!r}" + (f" version {version}" if version else "")
        raise NotFound(f"{what} not found")
    key = (name, found.version, found.checksum)
    template = _parsed.get(key)
    if template is None:
        row = session.get(TemplateVersion, (name, found.version))
        assert row is not None  # read in this transaction just now
        template = _parsed[key] = Template.model_validate(row.definition)
        while len(_parsed) > PARSED_CACHE_SIZE:
            del _parsed[next(iter(_parsed))]
    return template


#: Parsed templates by (name, version, checksum); oldest out first.
_parsed: dict[tuple[str, int, str], Template] = {}
PARSED_CACHE_SIZE = 256


def current_templates(database: Database) -> list[Template]:
    """Each template's newest version."""
    with database.session() as session:
        return [Template.model_validate(row.definition) for row in _newest(session)]


def _newest(session: Any) -> list[TemplateVersion]:
    newest = (
        select(TemplateVersion.name, func.max(TemplateVersion.version).label("version"))
        .group_by(TemplateVersion.name)
        .subquery()
    )
    return list(
        session.scalars(
            select(TemplateVersion)
            .join(
                newest,
                (TemplateVersion.name == newest.c.name)
                & (TemplateVersion.version == newest.c.version),
            )
            .order_by(TemplateVersion.name)
        ).all()
    )


def list_current(database: Database) -> list[dict[str, Any]]:
    """Each template's newest version, with how many versions it has."""
    with database.session() as session:
        rows = _newest(session)
        return [
            {
                "name": row.name,
                "version": row.version,
                "description": row.definition.get("description", ""),
                "parameters": row.definition.get("parameters", {}),
                "stages": len(row.definition.get("stages", [])),
                "updated_at": row.created_at.isoformat() if row.created_at else None,
            }
            for row in rows
        ]


# -- with a runtime: the worker types it knows -----------------------------------------


def known_workers(runtime: Runtime) -> dict[str, list[str]]:
    return {w.name: list(w.actions) for w in runtime.registry}


def sync_templates(runtime: Runtime) -> list[tuple[str, int, bool]]:
    """Register the templates directory's YAML files (new versions only when changed)."""
    return sync_directory(runtime.db, runtime.settings.templates_dir, known_workers(runtime))


def prepare(
    runtime: Runtime,
    template_name: str,
    parameters: dict[str, Any],
    session: Session | None = None,
) -> tuple[Template, list[BoundStage]]:
    """The current template bound to ``parameters``: every user error surfaces here. Read in
    ``session`` if given (a submit reads and writes in one)."""
    template = get(runtime.db, template_name) if session is None else read(session, template_name)
    check_workers(template, known_workers(runtime))
    return template, bind(template, parameters)

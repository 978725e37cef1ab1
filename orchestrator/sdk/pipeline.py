"""Pipelines as code: a template written in Python, validated into the same ``Template`` as
the YAML files (``parse_template``), so either form registers, binds and runs the same::

    from orchestrator.sdk.pipeline import Pipeline
    from workers.echo import echo

    pipeline = Pipeline("greeting", description="say hello, then say it louder")
    name = pipeline.parameter("name", "string", required=True)
    hello = pipeline.stage("hello", echo, "say", params={"text": f"hello {name}"})
    pipeline.stage("louder", echo, "say", depends_on=[hello], params={"text": name})
    template = pipeline.build()

A parameter is the text ``${name}`` and a stage is its id, so both go where the YAML would
have them. Mistakes fail where they are written, naming the stage: an unknown worker type
or action at ``stage()``, a cycle or an unknown dependency at ``build()``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from orchestrator.core.templates import Template, parse_template
from orchestrator.errors import ValidationFailed
from orchestrator.sdk import REGISTRY, WorkerType

STAGE_INDEX = re.compile(r"stages\[(\d+)\]")


class Param(str):
    """A template parameter; its text is ``${name}``, what a stage's params refer to."""

    name: str

    def __new__(cls, name: str) -> Param:
        value = super().__new__(cls, f"${{{name}}}")
        value.name = name
        return value


class StageRef(str):
    """A stage of the pipeline; its text is its id, what ``depends_on`` names."""


class Pipeline:
    """A template under construction; ``build()`` validates it into a ``Template``.

    ``check_workers=False`` allows worker types this process does not know (external ones
    registered over HTTP); the registry still checks them when the template is pushed.
    """

    def __init__(self, name: str, *, description: str = "", check_workers: bool = True) -> None:
        self.name = name
        self.description = description
        self.check_workers = check_workers
        self.parameters: dict[str, dict[str, Any]] = {}
        self.stages: list[dict[str, Any]] = []

    def parameter(
        self,
        name: str,
        type: str = "string",
        *,
        required: bool = False,
        default: Any = None,
        allowed: list[Any] | None = None,
        description: str = "",
        max_length: int | None = None,
    ) -> Param:
        """Declare a parameter; use what it returns in stage params (alone or in text)."""
        if name in self.parameters:
            raise ValidationFailed(f"{self.name}: parameter {name!r} is declared twice")
        spec: dict[str, Any] = {"type": type, "required": required, "default": default}
        spec.update(allowed=allowed, description=description, max_length=max_length)
        self.parameters[name] = {k: v for k, v in spec.items() if v not in (None, "")}
        return Param(name)

    def stage(
        self,
        id: str,
        worker: WorkerType | str | Callable[..., Any],
        action: str | None = None,
        *,
        depends_on: Iterable[str] = (),
        params: dict[str, Any] | None = None,
        **options: Any,
    ) -> StageRef:
        """Add a stage running ``worker``'s ``action`` (``worker`` may be a registered action
        function, which names both); ``options`` are the YAML's other stage fields
        (``resources``, ``timeout_s``, ``retry``, ``cache``, ``estimate``, ``shards``, ...)."""
        where = f"{self.name}: stage {id!r}"
        if any(stage["id"] == id for stage in self.stages):
            raise ValidationFailed(f"{where} is defined twice")
        worker_name, action_name = self._resolve(where, worker, action)
        stage: dict[str, Any] = {"id": id, "worker": worker_name, "action": action_name}
        stage.update(depends_on=[str(d) for d in depends_on], params=dict(params or {}))
        stage.update(options)
        self.stages.append(stage)
        return StageRef(id)

    def _resolve(
        self, where: str, worker: WorkerType | str | Callable[..., Any], action: str | None
    ) -> tuple[str, str]:
        if callable(worker) and not isinstance(worker, WorkerType):
            for kind in REGISTRY:
                for registered in kind.actions.values():
                    if registered.function is worker and action in (None, registered.name):
                        return kind.name, registered.name
            name = getattr(worker, "__name__", repr(worker))
            raise ValidationFailed(f"{where}: {name} is not a registered worker action")
        if action is None:
            raise ValidationFailed(f"{where}: name the action of worker type {worker}")
        if isinstance(worker, WorkerType):
            kind = worker
        elif not self.check_workers:
            return str(worker), action
        elif worker in REGISTRY:
            kind = REGISTRY.get(worker)
        else:
            known = ", ".join(REGISTRY.names()) or "none loaded"
            raise ValidationFailed(f"{where}: unknown worker type {worker!r} (known: {known})")
        if action not in kind.actions:
            has = ", ".join(sorted(kind.actions)) or "none"
            raise ValidationFailed(
                f"{where}: worker type {kind.name!r} has no action {action!r} (it has: {has})"
            )
        return kind.name, action

    def definition(self) -> dict[str, Any]:
        """The template as the YAML would hold it."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "stages": self.stages,
        }

    def build(self) -> Template:
        """The validated ``Template``; a cycle or an unknown dependency names the stages."""
        try:
            return parse_template(self.definition())
        except ValidationFailed as exc:
            # "stages[2].depends_on" says more as "stage 'report'.depends_on".
            message = STAGE_INDEX.sub(lambda m: self._stage_name(int(m.group(1))), exc.message)
            raise ValidationFailed(f"{self.name}: {message}", details=exc.details) from None

    def _stage_name(self, index: int) -> str:
        return f"stage {self.stages[index]['id']!r}" if index < len(self.stages) else "stages"

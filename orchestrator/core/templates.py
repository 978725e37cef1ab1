"""Pipeline templates: the YAML an operator writes, validated with errors that say where.

A stage's ``params`` may refer to the template's parameters as ``${name}``: a value that is
exactly ``"${name}"`` takes the parameter's value and type; ``${name}`` inside a longer
string is substituted as text. ``shards: N`` (or ``"${param}"``) runs a stage as N parallel
copies, each with ``shard`` and ``shards`` in its params; dependents wait for all copies.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.errors import ValidationFailed

#: The longest a stage may run; Celery's visibility timeout is set above it.
MAX_STAGE_TIMEOUT_S = 3600
MAX_SHARDS = 256
#: Deepest nesting of lists and mappings a template or a parameter value may hold.
MAX_DEPTH = 64
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


class _Strict(BaseModel):
    # NaN and infinities would be accepted here and then break every JSON that carries them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class Parameter(_Strict):
    type: Literal["string", "integer", "number", "boolean", "array", "object"] = "string"
    required: bool = False
    default: Any = None
    allowed: list[Any] | None = None
    description: str = ""
    max_length: int | None = Field(default=None, gt=0)


class RetrySpec(_Strict):
    max_attempts: int = Field(default=3, ge=1, le=20)
    backoff_s: float = Field(default=1.0, ge=0, le=600)
    factor: float = Field(default=2.0, ge=1, le=10)
    max_backoff_s: float = Field(default=60.0, ge=0, le=3600)


class CacheSpec(_Strict):
    enabled: bool = False
    ttl_s: int = Field(default=3600, gt=0, le=30 * 24 * 3600)
    #: Whether one client may be served a result another client's run produced; off by
    #: default, so a cached output (and the run id in its storage key) stays with its client.
    shared: bool = False


class EstimateHint(_Strict):
    """What one run of the stage usually costs; the estimator starts from these."""

    cost_usd: float = Field(default=0.0, ge=0)
    time_ms: int = Field(default=1000, ge=0)


class Stage(_Strict):
    id: str = Field(pattern=IDENTIFIER, max_length=100)
    worker: str
    action: str
    depends_on: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, float] = Field(default_factory=dict)
    timeout_s: int = Field(default=300, gt=0, le=MAX_STAGE_TIMEOUT_S)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    estimate: EstimateHint = Field(default_factory=EstimateHint)
    shards: int | str = 1
    description: str = ""

    @field_validator("resources")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for name, quantity in value.items():
            if quantity < 0:
                raise ValueError(f"{name} must not be negative")
        return value


class Template(_Strict):
    name: str = Field(pattern=IDENTIFIER, max_length=200)
    version: int = Field(default=1, ge=1)
    description: str = ""
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    stages: list[Stage] = Field(min_length=1, max_length=1000)

    def checksum(self) -> str:
        """Identity of the definition (not of its version number): a change adds a version."""
        body = self.model_dump(mode="json", exclude={"version"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class BoundStage(_Strict):
    """A stage with its parameters resolved and its shards expanded: what actually runs."""

    id: str
    template_stage: str
    worker: str
    action: str
    depends_on: tuple[str, ...]
    params: dict[str, Any]
    resources: dict[str, float]
    timeout_s: int
    retry: RetrySpec
    cache: CacheSpec
    estimate: EstimateHint
    order: int


def parameters_schema(template: Template) -> dict[str, Any]:
    """The template's parameters as a JSON Schema (draft 2020-12), for forms and generators:
    it accepts what ``resolve_parameters`` accepts (null stands for "use the default")."""
    properties: dict[str, Any] = {}
    for name, parameter in template.parameters.items():
        schema: dict[str, Any] = {"type": parameter.type}
        if parameter.description:
            schema["description"] = parameter.description
        if parameter.default is not None:
            schema["default"] = parameter.default
        if parameter.allowed is not None:
            schema["enum"] = parameter.allowed
        if parameter.max_length is not None and parameter.type == "string":
            schema["maxLength"] = parameter.max_length
        if parameter.max_length is not None and parameter.type == "array":
            schema["maxItems"] = parameter.max_length
        properties[name] = schema if parameter.required else {"anyOf": [schema, {"type": "null"}]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{template.name} parameters",
        "type": "object",
        "properties": properties,
        "required": sorted(n for n, p in template.parameters.items() if p.required),
        "additionalProperties": False,
    }


def _fail(where: str, problem: str) -> ValidationFailed:
    return ValidationFailed(f"{where}: {problem}", details={"where": where, "problem": problem})


def _pydantic_where(error: Mapping[str, Any]) -> str:
    where = ""
    for part in error["loc"]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where or "template"


def parse_template(data: Mapping[str, Any]) -> Template:
    """Validate the shape; then references, dependencies and cycles (no worker check)."""
    if not isinstance(data, Mapping):
        raise _fail("template", "must be a mapping")
    check_tree("", data)
    try:
        template = Template.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationFailed(
            f"{_pydantic_where(first)}: {first['msg']}",
            details=[{"where": _pydantic_where(e), "problem": e["msg"]} for e in exc.errors()],
        ) from None
    _check_structure(template)
    return template


def _check_structure(template: Template) -> None:
    """Unique ids, known dependencies and parameters, valid shards and defaults, no cycle."""
    ids: dict[str, int] = {}
    for index, stage in enumerate(template.stages):
        if stage.id in ids:
            raise _fail(f"stages[{index}].id", f"duplicate stage id {stage.id!r}")
        ids[stage.id] = index
    for index, stage in enumerate(template.stages):
        _check_stage(template, f"stages[{index}]", stage, ids)
    for name, parameter in template.parameters.items():
        if parameter.default is not None:
            _check_value(f"parameters.{name}.default", parameter, parameter.default)
    cycle = find_cycle({s.id: s.depends_on for s in template.stages})
    if cycle:
        raise _fail("stages", f"dependency cycle: {' -> '.join(cycle)}")


def _check_stage(template: Template, where: str, stage: Stage, ids: Mapping[str, int]) -> None:
    for dependency in stage.depends_on:
        if dependency not in ids:
            raise _fail(f"{where}.depends_on", f"unknown stage {dependency!r}")
        if dependency == stage.id:
            raise _fail(f"{where}.depends_on", "a stage cannot depend on itself")
    for name in _references(stage.params):
        if name not in template.parameters:
            raise _fail(f"{where}.params", f"unknown parameter ${{{name}}}")
    if isinstance(stage.shards, str):
        match = REFERENCE.fullmatch(stage.shards)
        if not match or match.group(1) not in template.parameters:
            raise _fail(f"{where}.shards", "must be an integer or ${parameter}")
    elif not 1 <= stage.shards <= MAX_SHARDS:
        raise _fail(f"{where}.shards", f"must be between 1 and {MAX_SHARDS}")


def check_workers(template: Template, known: Mapping[str, Iterable[str]]) -> None:
    """Every stage names a known worker type and one of its actions."""
    for index, stage in enumerate(template.stages):
        if stage.worker not in known:
            names = ", ".join(sorted(known)) or "none"
            raise _fail(
                f"stages[{index}].worker", f"unknown worker type {stage.worker!r} (known: {names})"
            )
        actions = set(known[stage.worker])
        if stage.action not in actions:
            raise _fail(
                f"stages[{index}].action",
                f"worker type {stage.worker!r} has no action {stage.action!r} "
                f"(it has: {', '.join(sorted(actions))})",
            )


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle as a path ``[a, b, a]`` (each depends on the next), or None.

    graphlib searches iteratively: a long chain cannot exhaust the recursion limit.
    """
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before its dependent; start from the first node named.
        cycle = list(reversed(exc.args[1][1:]))
        position = {node: index for index, node in enumerate(graph)}
        first = min(range(len(cycle)), key=lambda i: position.get(cycle[i], len(position)))
        cycle = cycle[first:] + cycle[:first]
        return [*cycle, cycle[0]]
    return None


def check_tree(where: str, value: Any) -> None:
    """Refuse what JSON and the database cannot carry: NaN or infinite numbers, text with a
    lone surrogate, nesting deeper than ``MAX_DEPTH``. Iterative, so depth cannot crash it.

    ``where`` names ``value`` in errors ("" for a whole template)."""
    stack = [(where, value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise _fail(path or "template", f"{item} is not a finite number")
        if isinstance(item, str) and not _is_unicode(item):
            raise _fail(path or "template", "text with a lone surrogate is not valid Unicode")
        if isinstance(item, Mapping | list | tuple):
            if depth >= MAX_DEPTH:
                raise _fail(path or "template", f"nested deeper than {MAX_DEPTH} levels")
            children = item.items() if isinstance(item, Mapping) else enumerate(item)
            for key, child in children:
                if isinstance(key, str) and not _is_unicode(key):
                    raise _fail(path or "template", "a key with a lone surrogate is not valid")
                if isinstance(key, int):
                    child_path = f"{path}[{key}]"
                else:
                    child_path = f"{path}.{key}" if path else str(key)
                stack.append((child_path, child, depth + 1))


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _references(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(REFERENCE.findall(value))
    if isinstance(value, Mapping):
        return set().union(*(_references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_references(v) for v in value)) if value else set()
    return set()


def _check_value(where: str, parameter: Parameter, value: Any) -> None:
    check_tree(where, value)
    types = PYTHON_TYPES[parameter.type]
    if isinstance(value, bool) and bool not in types:
        raise _fail(where, f"expected {parameter.type}, got boolean")
    if not isinstance(value, types):
        raise _fail(where, f"expected {parameter.type}, got {type(value).__name__}")
    if parameter.allowed is not None and value not in parameter.allowed:
        allowed = ", ".join(map(str, parameter.allowed))
        raise _fail(where, f"{value!r} is not one of: {allowed}")
    limit = parameter.max_length
    if limit is not None and isinstance(value, str | list) and len(value) > limit:
        raise _fail(where, f"longer than {parameter.max_length}")


def resolve_parameters(template: Template, given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in, unknown names and bad values refused, each named."""
    if not isinstance(given, Mapping):
        raise _fail("parameters", "must be an object")
    unknown = sorted(set(given) - set(template.parameters))
    if unknown:
        known = ", ".join(sorted(template.parameters)) or "none"
        raise _fail(f"parameters.{unknown[0]}", f"unknown parameter (known: {known})")
    resolved: dict[str, Any] = {}
    for name, parameter in template.parameters.items():
        if name in given and given[name] is not None:
            _check_value(f"parameters.{name}", parameter, given[name])
            resolved[name] = given[name]
        elif parameter.required:
            raise _fail(f"parameters.{name}", "required parameter is missing")
        else:
            resolved[name] = parameter.default
    return resolved


def _substitute(value: Any, parameters: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value)
        if whole:
            return parameters[whole.group(1)]
        return REFERENCE.sub(lambda m: str(parameters[m.group(1)]), value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, parameters) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, parameters) for v in value]
    return value


def bind(template: Template, given: Mapping[str, Any]) -> list[BoundStage]:
    """The stages that will run for ``given`` parameters, in template order, shards expanded."""
    parameters = resolve_parameters(template, given)
    shard_ids: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for stage in template.stages:
        count = _substitute(stage.shards, parameters)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_SHARDS:
            raise _fail(
                f"stages.{stage.id}.shards", f"must resolve to 1..{MAX_SHARDS}, got {count!r}"
            )
        counts[stage.id] = count
        shard_ids[stage.id] = (
            [stage.id] if count == 1 else [f"{stage.id}-{i}" for i in range(count)]
        )
    bound: list[BoundStage] = []
    for stage in template.stages:
        depends = tuple(d for dep in stage.depends_on for d in shard_ids[dep])
        params = _substitute(stage.params, parameters)
        for index, stage_id in enumerate(shard_ids[stage.id]):
            shard_params = (
                params
                if counts[stage.id] == 1
                else {**params, "shard": index, "shards": counts[stage.id]}
            )
            bound.append(
                BoundStage(
                    id=stage_id,
                    template_stage=stage.id,
                    worker=stage.worker,
                    action=stage.action,
                    depends_on=depends,
                    params=shard_params,
                    resources=stage.resources,
                    timeout_s=stage.timeout_s,
                    retry=stage.retry,
                    cache=stage.cache,
                    estimate=stage.estimate,
                    order=len(bound),
                )
            )
    return bound

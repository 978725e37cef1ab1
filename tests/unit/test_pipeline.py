"""Pipelines as code: the builder gives the same validated ``Template`` as the YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.templates import bind
from orchestrator.errors import ValidationFailed
from orchestrator.sdk.pipeline import Pipeline
from orchestrator.template_registry import parse_yaml, to_yaml
from workers.testing import echo, summer

ROOT = Path(__file__).resolve().parents[2]


def diamond() -> Pipeline:
    pipeline = Pipeline("diamond", description="a -> (b, c) -> d")
    a = pipeline.stage("a", summer, "add", params={"value": 1})
    b = pipeline.stage("b", "sum", "add", depends_on=[a], params={"value": 10})
    c = pipeline.stage("c", summer, "add", depends_on=[a], params={"value": 100})
    pipeline.stage("d", summer, "add", depends_on=[b, c], params={"value": 1000})
    return pipeline


def test_the_builder_and_the_yaml_make_the_same_template() -> None:
    from_yaml = parse_yaml((ROOT / "tests" / "templates" / "diamond.yaml").read_text())
    built = diamond().build()
    assert built == from_yaml
    assert built.checksum() == from_yaml.checksum()  # the registry sees no change


def test_parameters_are_references_alone_or_in_text() -> None:
    pipeline = Pipeline("greeting")
    name = pipeline.parameter("name", "string", required=True, max_length=20)
    times = pipeline.parameter("times", "integer", default=2)
    hello = pipeline.stage("hello", echo, "say", params={"text": f"hello {name}", "n": times})
    pipeline.stage("again", echo, "say", depends_on=[hello], shards=times)
    template = pipeline.build()
    stages = bind(template, {"name": "Ada"})
    assert stages[0].params == {"text": "hello Ada", "n": 2}
    assert [s.id for s in stages] == ["hello", "again-0", "again-1"]
    with pytest.raises(ValidationFailed, match=r"parameters\.name: required"):
        bind(template, {})


def test_an_export_parses_back_to_the_same_template() -> None:
    built = diamond().build()
    assert parse_yaml(to_yaml(built)) == built


@pytest.mark.parametrize(
    ("define", "message"),
    [
        (lambda p: p.stage("x", "no_such_worker", "go"), "stage 'x': unknown worker type"),
        (lambda p: p.stage("x", summer, "divide"), "stage 'x': worker type 'sum' has no action"),
        (lambda p: p.stage("x", len), "stage 'x': len is not a registered worker action"),
        (lambda p: (p.stage("x", summer, "add"), p.stage("x", summer, "add")), "x' is defined"),
    ],
)
def test_a_mistake_fails_at_definition_naming_the_stage(define: object, message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        define(Pipeline("broken"))  # type: ignore[operator]


def test_a_cycle_or_an_unknown_dependency_fails_at_build_naming_the_stages() -> None:
    cyclic = Pipeline("cyclic")
    cyclic.stage("a", summer, "add", depends_on=["b"])
    cyclic.stage("b", summer, "add", depends_on=["a"])
    with pytest.raises(ValidationFailed, match=r"cyclic: stages: dependency cycle: a -> b -> a"):
        cyclic.build()
    dangling = Pipeline("dangling")
    dangling.stage("a", summer, "add")
    dangling.stage("report", summer, "add", depends_on=["nowhere"])
    with pytest.raises(ValidationFailed, match=r"stage 'report'.depends_on: unknown stage"):
        dangling.build()


def test_an_action_function_names_its_worker_and_action() -> None:
    from workers.testing import say

    pipeline = Pipeline("one")
    pipeline.stage("only", say)
    assert pipeline.build().stages[0].worker == "echo"
    assert pipeline.build().stages[0].action == "say"

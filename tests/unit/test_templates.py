"""Template validation and binding: every mistake named with where it is."""

from __future__ import annotations

import re
from typing import Any

import pytest

from orchestrator.core.templates import bind, check_workers, find_cycle, parse_template
from orchestrator.errors import ValidationFailed


def template(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "t",
        "parameters": {
            "topic": {"type": "string", "required": True},
            "depth": {
                "type": "string",
                "default": "standard",
                "allowed": ["quick", "standard", "comprehensive"],
            },
            "width": {"type": "integer", "default": 3},
        },
        "stages": [
            {"id": "a", "worker": "echo", "action": "say", "params": {"text": "about ${topic}"}},
            {
                "id": "b",
                "worker": "echo",
                "action": "say",
                "depends_on": ["a"],
                "params": {"depth": "${depth}", "n": "${width}"},
                "shards": "${width}",
            },
            {"id": "c", "worker": "sum", "action": "add", "depends_on": ["b"]},
        ],
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stages": []}, "stages: List should have at least 1 item"),
        ({"name": "has space"}, "name: String should match pattern"),
        (
            {"stages": [{"id": "a", "worker": "echo", "action": "say", "depends_on": ["zz"]}]},
            "stages[0].depends_on: unknown stage 'zz'",
        ),
        (
            {
                "stages": [
                    {"id": "a", "worker": "echo", "action": "say"},
                    {"id": "a", "worker": "echo", "action": "say"},
                ]
            },
            "stages[1].id: duplicate stage id 'a'",
        ),
        (
            {
                "stages": [
                    {"id": "a", "worker": "echo", "action": "say", "depends_on": ["b"]},
                    {"id": "b", "worker": "echo", "action": "say", "depends_on": ["a"]},
                ]
            },
            "stages: dependency cycle: a -> b -> a",
        ),
        (
            {
                "stages": [
                    {"id": "a", "worker": "echo", "action": "say", "params": {"x": "${nope}"}}
                ]
            },
            "stages[0].params: unknown parameter ${nope}",
        ),
        (
            {"stages": [{"id": "a", "worker": "echo", "action": "say", "timeout_s": 99999}]},
            "stages[0].timeout_s: Input should be less than or equal to 3600",
        ),
        (
            {"stages": [{"id": "a", "worker": "echo", "action": "say", "shards": 0}]},
            "stages[0].shards: must be between 1 and 256",
        ),
        (
            {"stages": [{"id": "a", "worker": "echo", "action": "say", "resources": {"x": -1}}]},
            "stages[0].resources: Value error, x must not be negative",
        ),
        (
            {"stages": [{"id": "a", "worker": "echo", "action": "say", "surprise": 1}]},
            "stages[0].surprise: Extra inputs are not permitted",
        ),
        (
            {
                "parameters": {
                    "topic": {"type": "string"},
                    "depth": {"type": "string"},
                    "width": {"type": "integer", "default": "three"},
                }
            },
            "parameters.width.default: expected integer, got str",
        ),
    ],
)
def test_invalid_templates_say_where(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_template(template(**change))
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("known", "message"),
    [
        ({"sum": ["add"]}, "stages[0].worker: unknown worker type 'echo' (known: sum)"),
        (
            {"echo": ["shout"], "sum": ["add"]},
            "stages[0].action: worker type 'echo' has no action 'say' (it has: shout)",
        ),
    ],
)
def test_unknown_workers_and_actions(known: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValidationFailed, match=re.escape(message)):
        check_workers(parse_template(template()), known)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({}, "parameters.topic: required parameter is missing"),
        ({"topic": 3}, "parameters.topic: expected string, got int"),
        ({"topic": "x", "depth": "deep"}, "parameters.depth: 'deep' is not one of"),
        ({"topic": "x", "colour": "red"}, "parameters.colour: unknown parameter"),
        ({"topic": "x", "width": True}, "parameters.width: expected integer, got boolean"),
        ({"topic": "x", "width": 0}, "stages.b.shards: must resolve to 1..256"),
    ],
)
def test_bad_parameters_are_named(parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        bind(parse_template(template()), parameters)


def test_binding_substitutes_and_expands_shards() -> None:
    stages = bind(parse_template(template()), {"topic": "EVs", "width": 2})
    assert [s.id for s in stages] == ["a", "b-0", "b-1", "c"]
    assert stages[0].params == {"text": "about EVs"}
    assert stages[1].params == {"depth": "standard", "n": 2, "shard": 0, "shards": 2}
    assert stages[2].depends_on == ("a",)
    assert stages[3].depends_on == ("b-0", "b-1")
    assert [s.order for s in stages] == [0, 1, 2, 3]


def test_checksum_ignores_version_but_sees_changes() -> None:
    one = parse_template(template())
    assert one.checksum() == parse_template(template(version=7)).checksum()
    assert one.checksum() != parse_template(template(description="changed")).checksum()


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": [], "b": ["a"]}, None),
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["c"], "b": ["a"], "c": ["b"]}, ["a", "c", "b", "a"]),
    ],
)
def test_find_cycle(graph: dict[str, list[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle

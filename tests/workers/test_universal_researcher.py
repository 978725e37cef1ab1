"""universal_researcher.research: extractive findings with sources, and LLM mode."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.errors import ValidationFailed
from orchestrator.sdk import REGISTRY
from orchestrator.sdk.testing import llm_settings, output_of, stage_context
from tests.workers.openai_server import OpenAIServer, Received, running
from tests.workers.sample_articles import COFFEE, EV, articles
from workers.content_classifier import classify
from workers.lib.text import article_text
from workers.topic_researcher import expand_offline
from workers.universal_researcher import FINDINGS, PER_ARTICLE, research

QUESTION = "What are the main developments in electric vehicles?"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with running() as server:
        yield server


def _upstream(topic: str = "electric vehicles") -> dict[str, Any]:
    """research and two classify shards, produced by the real workers."""
    research_output = expand_offline(topic, "standard", [article_text(a) for a in articles()])
    inputs: dict[str, Any] = {"research": research_output}
    fetched = {"fetch-0": {"articles": articles()}, "research": research_output}
    for shard in range(2):
        ctx, _ = stage_context("content_classifier", "classify")
        params = {"topic": topic, "shard": shard, "shards": 2}
        inputs[f"classify-{shard}"] = output_of(classify(ctx, fetched, params))
    return inputs


def _run(params: dict, inputs: dict, settings=None):  # type: ignore[no-untyped-def]
    ctx, sink = stage_context("universal_researcher", "research", settings=settings)
    return output_of(research(ctx, inputs, params)), sink


def _links(ids: set[str]) -> set[str]:
    return {a["link"] for a in articles() if a["id"] in ids}


def test_registered_with_capabilities() -> None:
    described = REGISTRY.get("universal_researcher").describe()
    assert "research" in described["actions"]
    assert "extractive-summary" in described["capabilities"]


@pytest.mark.parametrize("depth", ["quick", "standard", "comprehensive"])
def test_extractive_findings_come_from_the_relevant_articles(depth: str) -> None:
    output, sink = _run({"question": QUESTION, "depth": depth}, _upstream())
    assert set(output) == {"question", "answer", "findings", "method"}
    assert output["method"] == "extractive" and output["question"] == QUESTION
    findings = output["findings"]
    assert len(findings) == FINDINGS[depth]
    summaries = " ".join(a["summary"] for a in articles() if a["id"] in EV)
    for finding in findings:
        assert set(finding) == {"text", "source", "link"}
        assert finding["link"] in _links(EV)
        assert finding["text"] in summaries  # extractive: quoted, not invented
        assert finding["source"] in {"EV Daily", "Auto Tech Review", "Green Motoring"}
    assert len({f["text"] for f in findings}) == len(findings)
    assert output["answer"].startswith("From 6 article(s) across 3 source(s): ")
    assert findings[0]["text"] in output["answer"]
    assert sink.progress_reports[-1][0] == 100 and sink.usages == []


def test_findings_are_spread_across_articles() -> None:
    output, _ = _run({"question": QUESTION, "depth": "comprehensive"}, _upstream())
    per_link: dict[str, int] = {}
    for finding in output["findings"]:
        per_link[finding["link"]] = per_link.get(finding["link"], 0) + 1
    assert max(per_link.values()) <= PER_ARTICLE
    assert len(per_link) >= 5


def test_the_question_steers_the_findings() -> None:
    output, _ = _run(
        {"question": "How are coffee prices and farmers affected by drought and climate?"},
        _upstream("coffee"),
    )
    assert {f["link"] for f in output["findings"]} <= _links(COFFEE)
    assert "drought" in output["findings"][0]["text"] or "climate" in output["answer"].lower()


def test_unclassified_articles_are_read_too() -> None:
    inputs = {"fetch-0": {"articles": articles()[:6]}}
    output, _ = _run({"question": "Where do battery prices go?", "depth": "quick"}, inputs)
    assert len(output["findings"]) == 3
    assert any("batter" in f["text"].lower() for f in output["findings"])


def test_the_question_defaults_from_the_topic_upstream() -> None:
    output, _ = _run({}, _upstream())
    assert output["question"] == QUESTION


def test_no_articles_gives_an_honest_empty_answer() -> None:
    output, _ = _run({"question": QUESTION}, {"research": {"topic": "electric vehicles"}})
    assert output["findings"] == []
    assert output["answer"] == "No article in the inputs addressed the question."


def test_a_question_is_required() -> None:
    with pytest.raises(ValidationFailed, match="question"):
        _run({}, {"fetch": {"articles": articles()}})


def _analyst(request: Received) -> str:
    excerpts = dict(re.findall(r"^\[(\d+)\] \((.*?)\) ", request.prompt, re.MULTILINE))
    assert len(excerpts) >= 6
    return json.dumps(
        {
            "answer": "Cheaper batteries and more chargers are pushing EV adoption.",
            "findings": [
                {"text": "Battery prices keep falling.", "excerpt": 0},
                {"text": "Fast chargers spread along motorways.", "excerpt": 1},
                {"text": "Invented claim citing nothing.", "excerpt": 999},
            ],
        }
    )


def test_llm_mode_cites_the_excerpts_it_rests_on(server: OpenAIServer) -> None:
    server.responder = _analyst
    output, sink = _run({"question": QUESTION}, _upstream(), llm_settings(server.base_url))
    assert output["method"] == "llm"
    assert output["answer"] == "Cheaper batteries and more chargers are pushing EV adoption."
    assert [f["text"] for f in output["findings"]] == [
        "Battery prices keep falling.",
        "Fast chargers spread along motorways.",
    ]
    prompt = server.requests[0].prompt
    for n, finding in enumerate(output["findings"]):
        assert f"[{n}] ({finding['source']}) " in prompt
        assert finding["link"] in _links(EV)
    assert sink.usages == [("openai_api", 52)]


def test_llm_mode_falls_back_to_extractive_and_says_so(server: OpenAIServer) -> None:
    server.reply(json.dumps({"answer": "EVs are growing.", "findings": []}))
    output, sink = _run({"question": QUESTION}, _upstream(), llm_settings(server.base_url))
    assert output["method"] == "extractive"
    assert "not the JSON" in output["note"]
    assert len(output["findings"]) == FINDINGS["standard"]
    assert sink.used("openai_api") == 52

"""content_classifier.classify: TF-IDF relevance and labels, shards, and LLM mode."""

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
from tests.workers.sample_articles import COFFEE, EV, QUANTUM, articles
from workers.content_classifier import BATCH, THRESHOLD, classify, label_of
from workers.lib.text import article_text, coverage
from workers.topic_researcher import expand_offline

ARTICLE_FIELDS = {"id", "title", "link", "summary", "published", "source", "feed_url"}


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with running() as server:
        yield server


def _research(topic: str) -> dict[str, Any]:
    return expand_offline(topic, "standard", [article_text(a) for a in articles()])


def _inputs(topic: str = "electric vehicles") -> dict[str, Any]:
    """As the template wires it: research plus two fetch shards splitting the articles."""
    every = articles()
    return {
        "research": _research(topic),
        "fetch-0": {"articles": every[0::2], "feeds_fetched": 4},
        "fetch-1": {"articles": every[1::2], "feeds_fetched": 4},
    }


def _run(params: dict, inputs: dict, settings=None):  # type: ignore[no-untyped-def]
    ctx, sink = stage_context("content_classifier", "classify", settings=settings)
    return output_of(classify(ctx, inputs, params)), sink


def _by_id(output: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in output["articles"]}


def test_registered_with_capabilities() -> None:
    described = REGISTRY.get("content_classifier").describe()
    assert "classify" in described["actions"] and "tfidf" in described["capabilities"]


@pytest.mark.parametrize(
    ("topic", "on_topic"),
    [("electric vehicles", EV), ("coffee", COFFEE), ("quantum computing", QUANTUM)],
)
def test_tfidf_separates_the_topic_from_the_rest(topic: str, on_topic: set[str]) -> None:
    output, sink = _run({"topic": topic}, _inputs(topic))
    assert output["method"] == "tfidf" and output["threshold"] == THRESHOLD
    scored = _by_id(output)
    assert set(scored) == EV | COFFEE | QUANTUM
    subtopics = set(_research(topic)["subtopics"])
    for article_id, article in scored.items():
        assert set(article) == ARTICLE_FIELDS | {"relevance", "label", "subtopic"}
        assert 0.0 <= article["relevance"] <= 1.0
        if article_id in on_topic:
            assert article["label"] == "relevant", article["title"]
            assert article["subtopic"] in subtopics
        else:
            assert article["label"] == "off_topic", article["title"]
            assert article["subtopic"] is None
    weakest_on = min(scored[i]["relevance"] for i in on_topic)
    strongest_off = max(a["relevance"] for i, a in scored.items() if i not in on_topic)
    assert weakest_on > strongest_off
    assert sink.progress_reports[-1][0] == 100 and sink.usages == []


def test_the_best_subtopic_is_the_one_the_article_is_about() -> None:
    output, _ = _run({"topic": "electric vehicles"}, _inputs())
    by_title = {a["title"]: a["subtopic"] for a in output["articles"]}
    assert by_title["Fast charging network expands along European motorways"] == (
        "charging network"
    )
    assert by_title["Solid-state batteries promise longer range for electric cars"] == (
        "solid-state batteries"
    )


def test_shards_split_the_articles_and_score_on_one_scale() -> None:
    whole = _by_id(_run({"topic": "coffee"}, _inputs("coffee"))[0])
    parts = [
        _by_id(_run({"topic": "coffee", "shard": n, "shards": 3}, _inputs("coffee"))[0])
        for n in range(3)
    ]
    assert sum(len(p) for p in parts) == len(whole)
    assert set().union(*parts) == set(whole)
    for part in parts:
        for article_id, article in part.items():
            assert article == whole[article_id]  # same relevance whichever shard scores it


def test_an_article_in_two_inputs_is_classified_once() -> None:
    every = articles()
    inputs = {
        "research": _research("coffee"),
        "a": {"articles": every[:8]},
        "b": {"articles": every[5:]},
    }
    output, _ = _run({"topic": "coffee"}, inputs)
    ids = [a["id"] for a in output["articles"]]
    assert len(ids) == len(set(ids)) == len(every)


def test_inputs_are_found_by_field_name_not_stage_id() -> None:
    research = _research("quantum computing")
    inputs = {"stage-x": {"articles": articles()}, "whatever": research}
    output, _ = _run({}, inputs)  # the topic too comes from the research output
    relevant = {a["id"] for a in output["articles"] if a["label"] == "relevant"}
    assert relevant == QUANTUM


def test_without_keywords_the_topic_alone_still_classifies() -> None:
    output, _ = _run({"topic": "coffee"}, {"fetch": {"articles": articles()}})
    relevant = {a["id"] for a in output["articles"] if a["label"] == "relevant"}
    assert relevant == COFFEE
    assert all(a["subtopic"] is None for a in output["articles"])


def test_no_articles_is_an_empty_result() -> None:
    output, _ = _run({"topic": "coffee", "shard": 1, "shards": 2}, {"research": _research("x")})
    assert output == {"articles": [], "method": "tfidf", "threshold": THRESHOLD}


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({}, "topic"),
        ({"topic": "coffee", "shard": 2, "shards": 2}, "shard"),
        ({"topic": "coffee", "threshold": 0}, "threshold"),
    ],
)
def test_bad_params_are_refused(params: dict, problem: str) -> None:
    with pytest.raises(ValidationFailed, match=problem):
        _run(params, {"fetch": {"articles": articles()}})


@pytest.mark.parametrize(
    ("relevance", "label"),
    [(0.9, "relevant"), (0.5, "relevant"), (0.3, "related"), (0.25, "related"), (0.1, "off_topic")],
)
def test_labels_follow_fixed_cut_offs(relevance: float, label: str) -> None:
    assert label_of(relevance) == label


def _judge(request: Received) -> str:
    """An LLM that rates articles mentioning coffee 0.9, the rest 0.05."""
    listing = re.findall(r"^\[(\d+)\] (.*)$", request.prompt, re.MULTILINE)
    results = [
        {
            "index": int(n),
            "relevance": 0.9 if "coffee" in text.lower() else 0.05,
            "subtopic": "cold brew" if "brew" in text.lower() else "no such subtopic",
        }
        for n, text in listing
    ]
    return json.dumps({"results": results})


def test_llm_mode_scores_in_batches_and_reports_tokens(server: OpenAIServer) -> None:
    server.responder = _judge
    output, sink = _run({"topic": "coffee"}, _inputs("coffee"), llm_settings(server.base_url))
    assert output["method"] == "llm"
    scored = _by_id(output)
    assert {i for i, a in scored.items() if a["label"] == "relevant"} == COFFEE
    assert {a["relevance"] for i, a in scored.items() if i in COFFEE} == {0.9}
    subtopics = {a["title"]: a["subtopic"] for a in output["articles"]}
    assert subtopics["Cold brew and ready-to-drink coffee drive growth"] == "cold brew"
    assert subtopics["Climate change threatens coffee farms"] is None  # unknown subtopic
    batches = -(-len(scored) // BATCH)
    assert len(server.requests) == batches
    assert sink.usages == [("openai_api", 52)] * batches


def test_articles_the_llm_leaves_out_keep_their_tfidf_score(server: OpenAIServer) -> None:
    offline = _by_id(_run({"topic": "coffee"}, _inputs("coffee"))[0])
    server.reply(json.dumps({"results": [{"index": 0, "relevance": 1}, {"index": 99}]}))
    server.reply("I cannot help with that.")
    output, sink = _run({"topic": "coffee"}, _inputs("coffee"), llm_settings(server.base_url))
    assert output["method"] == "llm"
    first, *rest = output["articles"]
    assert first["relevance"] == 1.0
    assert all(a == offline[a["id"]] for a in rest)
    assert sink.used("openai_api") == 104


def test_an_llm_that_never_answers_in_json_leaves_tfidf(server: OpenAIServer) -> None:
    server.responder = lambda request: "Relevant, mostly."
    output, _ = _run({"topic": "coffee"}, _inputs("coffee"), llm_settings(server.base_url))
    assert output["method"] == "tfidf"
    assert {a["id"] for a in output["articles"] if a["label"] == "relevant"} == COFFEE


@pytest.mark.parametrize(
    ("terms", "present", "named"),
    [
        (["electric", "vehicle"], {"electric", "vehicle", "sale"}, 1.0),
        (["electric", "vehicle"], {"ev", "sale"}, 1.0),
        (["electric", "vehicle"], {"electric", "roasting"}, 0.5),
        (["coffee"], {"tea"}, 0.0),
        ([], {"tea"}, 0.0),
    ],
)
def test_naming_the_topic_counts_its_acronym(terms: list[str], present: set, named: float) -> None:
    assert coverage(terms, present) == named


def test_feedback_finds_articles_that_use_the_acronym_or_other_words() -> None:
    extra = [
        {"id": "ev-acronym", "title": "EV registrations jump in Norway", "summary": ""},
        {
            "id": "no-topic-words",
            "title": "Charging network operators add battery storage",
            "summary": "Fast charging sites add battery buffers to cut grid connection costs.",
        },
    ]
    inputs = {"fetch": {"articles": articles() + extra}}
    scored = _by_id(_run({"topic": "electric vehicles"}, inputs)[0])
    assert scored["ev-acronym"]["label"] == "relevant"
    coffee = max(scored[i]["relevance"] for i in COFFEE)
    assert scored["no-topic-words"]["relevance"] > coffee

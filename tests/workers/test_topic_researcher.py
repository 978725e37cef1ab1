"""topic_researcher.expand: offline on realistic articles, and with a local OpenAI server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import ValidationFailed
from orchestrator.sdk import REGISTRY
from orchestrator.sdk.testing import llm_settings, output_of, stage_context
from tests.workers.openai_server import OpenAIServer, Received, running
from tests.workers.sample_articles import articles
from workers.lib.text import FACETS, article_text
from workers.topic_researcher import COUNTS, corpus_names, corpus_texts, expand, expand_offline

CONTRACT = {"topic", "depth", "subtopics", "keywords", "queries", "method"}


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with running() as server:
        yield server


def _run(params: dict, inputs: dict | None = None, settings=None):  # type: ignore[no-untyped-def]
    ctx, sink = stage_context("topic_researcher", "expand", settings=settings)
    return output_of(expand(ctx, inputs or {}, params)), sink


def test_registered_with_capabilities() -> None:
    described = REGISTRY.get("topic_researcher").describe()
    assert "expand" in described["actions"]
    assert "topic-expansion" in described["capabilities"]


def test_offline_expansion_mines_the_articles_on_the_topic() -> None:
    inputs = {"anything-upstream": {"articles": articles()}}
    output, sink = _run({"topic": "electric vehicles", "depth": "standard"}, inputs)
    assert set(output) >= CONTRACT and output["method"] == "offline"
    assert (output["topic"], output["depth"]) == ("electric vehicles", "standard")
    n_sub, n_kw, n_q = COUNTS["standard"]
    assert len(output["subtopics"]) == n_sub and len(output["queries"]) == n_q
    # No padding: only phrases the topic's texts share or repeat (six articles give nine).
    assert 8 <= len(output["keywords"]) <= n_kw
    # Phrases that recur in the EV articles, none from the coffee or quantum ones.
    assert {"solid-state batteries", "charging network"} <= set(output["subtopics"])
    assert {"battery prices", "battery health"} <= set(output["keywords"])
    mined = " ".join(output["subtopics"] + output["keywords"])
    assert "coffee" not in mined and "qubit" not in mined
    assert output["keywords"][0] == "electric vehicles"
    assert all("electric vehicles" in q for q in output["queries"])
    assert len(set(output["queries"])) == len(output["queries"])
    assert json.loads(json.dumps(output)) == output
    assert sink.progress_reports[-1][0] == 100
    assert [p for p, _ in sink.progress_reports] == sorted(p for p, _ in sink.progress_reports)
    assert sink.usages == []


@pytest.mark.parametrize("depth", ["quick", "standard", "comprehensive"])
def test_depth_scales_the_counts(depth: str) -> None:
    texts = [article_text(a) for a in articles()]
    output = expand_offline("coffee", depth, texts)
    n_sub, n_kw, n_q = COUNTS[depth]
    assert (len(output["subtopics"]), len(output["queries"])) == (n_sub, n_q)
    assert 2 <= len(output["keywords"]) <= n_kw  # four coffee articles: what they repeat
    # What two articles share leads; what one repeats still counts.
    assert output["subtopics"][0] == "coffee farmers"
    assert "cold brew" in output["subtopics"] + output["keywords"]


def test_without_text_the_market_facets_fill_in() -> None:
    output = expand_offline("solar panels", "quick", [])
    assert output["subtopics"] == [
        "solar panels market size and growth",
        "solar panels key players and competition",
        "solar panels pricing and costs",
    ]
    assert output["keywords"] == ["solar panels"]
    assert output["queries"][0] == "solar panels market size and growth"


def test_facets_follow_what_the_topic_texts_discuss() -> None:
    texts = [
        "Coffee prices rose again; the cost of arabica and the price of a cup keep climbing.",
        "Cafes pass higher coffee costs to customers as prices of beans jump.",
    ]
    output = expand_offline("coffee", "quick", texts)
    assert "coffee pricing and costs" in output["subtopics"]


@pytest.mark.parametrize(
    ("params", "problem"),
    [({"topic": "  "}, "topic"), ({"topic": "coffee", "depth": "deep"}, "depth")],
)
def test_bad_params_are_refused(params: dict, problem: str) -> None:
    with pytest.raises(ValidationFailed, match=problem):
        _run(params)


def test_the_corpus_reader_reads_the_feeds(tmp_path: Path) -> None:
    (tmp_path / "sites" / "ev").mkdir(parents=True)
    (tmp_path / "sites" / "ev" / "feed.rss").write_text(
        """<?xml version="1.0"?><rss version="2.0"><channel><title>EV Daily</title>
        <item><title>Charging network grows</title>
        <description>&lt;p&gt;More fast chargers on motorways.&lt;/p&gt;</description></item>
        </channel></rss>"""
    )
    (tmp_path / "sites" / "ev" / "index.html").write_text("<h1>EV Daily</h1><nav>Home</nav>")
    assert corpus_texts(tmp_path) == ("Charging network grows. More fast chargers on motorways.",)
    assert corpus_texts(tmp_path / "missing") == ()


def test_without_upstream_articles_it_reads_the_shipped_corpus() -> None:
    output, _ = _run({"topic": "electric vehicles", "depth": "quick"})
    assert output["method"] == "offline"
    assert len(output["subtopics"]) == COUNTS["quick"][0]
    assert output["documents_read"] == len(set(corpus_texts()))


def _canned(request: Received) -> str:
    assert "electric vehicles" in request.prompt
    return json.dumps(
        {
            "subtopics": ["battery technology", "charging infrastructure", "EV policy", "x", "y"],
            "keywords": ["EV", "battery", "charging", "range", "BYD", "Tesla", "lithium"],
            "queries": ["EV sales 2025", "EV charging networks", "solid-state battery news"],
        }
    )


def test_llm_mode_uses_the_models_json_and_reports_tokens(server: OpenAIServer) -> None:
    server.responder = _canned
    output, sink = _run(
        {"topic": "electric vehicles", "depth": "quick"}, settings=llm_settings(server.base_url)
    )
    assert output["method"] == "llm"
    assert output["subtopics"] == ["battery technology", "charging infrastructure", "EV policy"]
    assert output["keywords"][:2] == ["EV", "battery"]
    assert output["queries"] == [
        "EV sales 2025",
        "EV charging networks",
        "solid-state battery news",
    ]
    [request] = server.requests
    assert request.body["response_format"] == {"type": "json_object"}
    assert sink.usages == [("openai_api", 52)]  # the server's usage: 40 prompt + 12 completion


def test_llm_mode_falls_back_offline_on_bad_json_and_says_so(server: OpenAIServer) -> None:
    server.reply("Here are some subtopics: batteries, charging.")
    inputs = {"fetch-0": {"articles": articles()}}
    output, sink = _run(
        {"topic": "electric vehicles", "depth": "quick"}, inputs, llm_settings(server.base_url)
    )
    assert output["method"] == "offline"
    assert "not the JSON" in output["note"]
    assert "solid-state batteries" in output["subtopics"]
    assert sink.used("openai_api") == 52  # the failed answer still cost tokens


def test_llm_mode_rejects_json_of_the_wrong_shape(server: OpenAIServer) -> None:
    server.reply(json.dumps({"subtopics": "batteries", "keywords": [1, 2], "queries": []}))
    output, _ = _run({"topic": "coffee"}, settings=llm_settings(server.base_url))
    assert output["method"] == "offline" and "note" in output


def test_a_429_puts_the_llm_on_cooldown(server: OpenAIServer) -> None:
    server.push(429, '{"error": {"message": "slow down"}}', {"Retry-After": "1"})
    server.responder = _canned
    output, sink = _run({"topic": "electric vehicles"}, settings=llm_settings(server.base_url))
    assert output["method"] == "llm"
    assert sink.cooldowns == [("openai_api", 1.0)]
    assert len(server.requests) == 2


# -- quality on the shipped corpus (what the demo's research stage reads) -----------------

SITE_NAMES = set(corpus_names())


def _corpus_expansion(topic: str, depth: str = "standard") -> dict:
    return expand_offline(topic, depth, list(corpus_texts()), corpus_names())


def _mentions_a_site_name(phrase: str) -> bool:
    words = set(phrase.lower().split())
    return any(words <= set(name.lower().split()) for name in SITE_NAMES)


def test_corpus_names_are_the_feed_and_site_titles() -> None:
    assert {"Voltage Weekly", "Charge Point Journal", "The Roaster's Ledger"} <= SITE_NAMES
    assert "Qubit Dispatch" in SITE_NAMES and "City Sports Desk" in SITE_NAMES


@pytest.mark.parametrize(
    ("topic", "expected", "foreign"),
    [
        ("electric vehicles", {"EV charging", "grid connection", "sodium-ion packs"}, "coffee"),
        ("specialty coffee", {"coffee importers", "direct trade", "roasters"}, "charg"),
        ("coffee", {"coffee prices", "roasters", "espresso"}, "qubit"),
        ("quantum computing", {"error correction", "cloud quantum processors"}, "coffee"),
    ],
)
def test_corpus_keywords_are_about_the_topic(topic: str, expected: set, foreign: str) -> None:
    output = _corpus_expansion(topic)
    assert output["keywords"][0] == topic
    assert expected <= set(output["keywords"]), output["keywords"]
    mined = output["keywords"][1:] + output["subtopics"]
    assert not [p for p in mined if _mentions_a_site_name(p)], mined
    assert not [p for p in mined if foreign in p.lower()], mined
    # Mostly phrases, and the first subtopic is mined from the text, not a generic facet.
    assert sum(" " in k for k in output["keywords"][1:]) >= len(output["keywords"][1:]) / 2
    assert not output["subtopics"][0].endswith(tuple(FACETS))


def test_ev_keywords_are_charging_and_battery_terms_without_site_names() -> None:
    output = _corpus_expansion("electric vehicles")
    keywords = output["keywords"]
    assert len(keywords) == COUNTS["standard"][1]
    assert sum("charg" in k.lower() for k in keywords) >= 3
    assert any(term in k.lower() for k in keywords for term in ("battery", "sodium-ion", "pack"))
    banned = {"charge point journal", "voltage weekly", "roaster ledger", "utilities", "earn"}
    assert not banned & {k.lower() for k in keywords + output["subtopics"]}
    assert {"efta", "means", "read"}.isdisjoint(keywords)
    assert output["subtopics"][:2] == ["EV charging", "grid connection"]


def test_an_unknown_topic_falls_back_to_the_market_facets() -> None:
    output = _corpus_expansion("solar panels", "quick")
    assert output["documents_on_topic"] == 0  # one canopy article is no topic vocabulary
    assert output["subtopics"] == [
        "solar panels market size and growth",
        "solar panels key players and competition",
        "solar panels pricing and costs",
    ]
    assert output["keywords"] == ["solar panels"]
    assert all(q.startswith("solar panels") for q in output["queries"])


def test_source_names_in_the_text_are_not_phrases() -> None:
    texts = [
        "Via Charge Point Journal: fast chargers on motorways double.",
        "Via Charge Point Journal: fast chargers need grid connections.",
        "Charge Point Journal says fast chargers lack grid connections.",
    ]
    plain_run = expand_offline("fast chargers", "quick", texts)
    assert "charge point journal" in plain_run["keywords"]  # without names: the site wins
    named = expand_offline("fast chargers", "quick", texts, ["Charge Point Journal"])
    assert not any("journal" in k for k in named["keywords"] + named["subtopics"])
    assert "grid connections" in named["keywords"]

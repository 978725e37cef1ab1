"""``report_builder.build``: Markdown and self-contained HTML from corpus articles."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from orchestrator.sdk import StageContext
from orchestrator.sdk.testing import RecordingSink, output_of, stage_context
from orchestrator.settings import Settings
from orchestrator.storage.objects import ObjectStore
from workers.feed_fetcher import fetch
from workers.lib.corpus import CorpusServer
from workers.report_builder.build import build

FEEDS = ["voltage-weekly/feed.rss", "charge-point-journal/feed.atom", "tech-roundup/feed.rss"]
SUBTOPICS = ["charging infrastructure", "battery technology", "market and prices"]
CUES = {"charg": SUBTOPICS[0], "batter": SUBTOPICS[1], "price": SUBTOPICS[2], "sales": SUBTOPICS[2]}
HOSTILE = {
    "id": "hostile",
    "title": '<script>alert("title")</script> R&D',
    "link": "javascript:alert(1)",
    "summary": "<img src=x onerror=alert(2)> [click](http://evil.example)",
    "published": None,
    "source": "<b>Evil</b> | Feed",
    "feed_url": "http://evil.example/feed",
    "relevance": 0.99,
    "label": "relevant",
    "subtopic": "<svg onload=alert(3)>",
}


@pytest.fixture
def corpus_articles(
    settings: Settings, corpus_server: CorpusServer, redis_client: redis.Redis
) -> list[dict[str, Any]]:
    """Articles fetched from the shipped corpus, classified by a fixed, readable rule."""
    local = settings.with_overrides(corpus_port=corpus_server.port, allow_private_urls=False)
    ctx, _ = stage_context("feed_fetcher", "fetch", settings=local)
    feeds = [{"url": f"{corpus_server.url}/sites/{path}"} for path in FEEDS]
    articles = fetch(ctx, {"sources": {"feeds": feeds}}, {})["articles"]
    for article in articles:
        text = (article["title"] + " " + article["summary"]).lower()
        subtopic = next((s for cue, s in CUES.items() if cue in text), None)
        relevance = 0.8 if subtopic else (0.3 if "electric" in text else 0.05)
        label = "relevant" if relevance >= 0.5 else "related" if relevance >= 0.25 else "off_topic"
        article.update(relevance=relevance, label=label, subtopic=subtopic)
    return articles


def inputs_for(articles: list[dict[str, Any]], *, method: str = "tfidf") -> dict[str, Any]:
    """Upstream outputs as the template wires them: research, sources, two fetch shards (raw
    articles), two classify shards (the same articles, classified), findings."""
    half = len(articles) // 2
    raw = [
        {k: v for k, v in a.items() if k not in {"relevance", "label", "subtopic"}}
        for a in articles
    ]
    return {
        "research": {
            "topic": "electric vehicles",
            "subtopics": SUBTOPICS,
            "keywords": ["charging", "battery", "EV sales"],
            "method": "offline",
        },
        "sources": {
            "feeds": [{"url": "u", "title": "t", "site": "s", "score": 1.0}],
            "method": "keyword_match",
        },
        "fetch-0": {"articles": raw[::2], "feeds_fetched": 2, "method": "conditional_get"},
        "fetch-1": {"articles": raw[1::2], "feeds_fetched": 1, "method": "conditional_get"},
        "classify-0": {"articles": articles[:half], "method": method, "threshold": 0.5},
        "classify-1": {"articles": articles[half:], "method": method, "threshold": 0.5},
        "findings": {
            "question": "What are the main developments in electric vehicles?",
            "answer": "Charging networks & battery chemistry both moved <fast>.",
            "findings": [
                {
                    "text": articles[0]["summary"],
                    "source": "Voltage Weekly",
                    "link": articles[0]["link"],
                }
            ],
            "method": "extractive",
        },
    }


def built(settings: Settings, inputs: dict[str, Any]) -> tuple[dict[str, Any], RecordingSink]:
    ctx, sink = stage_context("report_builder", "build", settings=settings, stage_id="report")
    return output_of(build(ctx, inputs, {"topic": "electric vehicles", "depth": "standard"})), sink


def test_builds_both_deliverables_from_corpus_articles(
    settings: Settings, corpus_articles: list[dict[str, Any]]
) -> None:
    output, sink = built(settings, inputs_for(corpus_articles))
    assert set(sink.deliveries) == {"report.md", "report.html"}
    assert output["deliverables"] == {
        "report.md": "deliverables/exec-test/report.md",
        "report.html": "deliverables/exec-test/report.html",
    }
    relevant = sum(a["label"] == "relevant" for a in corpus_articles)
    assert output["articles"] == len(corpus_articles) == 29  # 32 items, 3 repeated
    assert output["relevant"] == relevant > 0
    assert output["methods"] == {
        "topic_researcher": "offline",
        "rss_source_finder": "keyword_match",
        "feed_fetcher": "conditional_get",
        "content_classifier": "tfidf",
        "universal_researcher": "extractive",
        "report_builder": "template",
    }
    assert list(output["methods"]) == [  # pipeline order in the methods table
        "topic_researcher",
        "rss_source_finder",
        "feed_fetcher",
        "content_classifier",
        "universal_researcher",
        "report_builder",
    ]
    assert output["llm_used"] is False
    page = sink.deliveries["report.html"].decode()
    markdown = sink.deliveries["report.md"].decode()
    for text in (page, markdown):
        assert "Offline methods" in text
        assert "No LLM was configured" in text
        assert "Solid-state battery pilot line starts shipping A-samples to carmakers" in text
    assert "Charging networks &amp; battery chemistry both moved &lt;fast&gt;." in page
    assert "| charging infrastructure |" in markdown


def test_html_is_self_contained_with_charts(
    settings: Settings, corpus_articles: list[dict[str, Any]]
) -> None:
    _, sink = built(settings, inputs_for(corpus_articles))
    page = sink.deliveries["report.html"].decode()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<script" not in page
    assert not re.search(r'(src|href)="(?!https?://)', page.replace('href="https://', ""))
    assert page.count("<svg") == 2
    chart = page[page.index("<svg") : page.index("</svg>")]
    for subtopic in SUBTOPICS:
        assert f">{subtopic}</text>" in chart
    bars = re.findall(
        r'width="([\d.]+)" height="16" fill="#2563eb" rx="3"/>\n'
        r'<rect x="[\d.]+" y="\d+" width="([\d.]+)" height="16" fill="#93c5fd"',
        chart,
    )
    assert len(bars) == len(SUBTOPICS) + 1  # and one for articles with no subtopic
    assert max(float(rel) + float(near) for rel, near in bars) == pytest.approx(240.0)
    assert "Top articles" in page and page.count('<td class="num">') == 20


def test_feed_text_is_escaped(settings: Settings, corpus_articles: list[dict[str, Any]]) -> None:
    _, sink = built(settings, inputs_for([HOSTILE, *corpus_articles]))
    page = sink.deliveries["report.html"].decode()
    markdown = sink.deliveries["report.md"].decode()
    assert (
        "<script>" not in page
        and "&lt;script&gt;alert(&quot;title&quot;)&lt;/script&gt; R&amp;D" in page
    )
    assert "<img" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<svg onload" not in page and "&lt;svg onload=alert(3)&gt;" in page
    assert "<b>Evil</b>" not in page and "&lt;b&gt;Evil&lt;/b&gt;" in page
    assert "javascript:" not in page and "javascript:" not in markdown
    assert r'\<script\>alert\("title"\)\</script\> R&D' in markdown
    assert r"\<b\>Evil\</b\> \| Feed" in markdown


def test_an_llm_run_says_so(corpus_articles: list[dict[str, Any]]) -> None:
    llm = Settings(llm_base_url="http://127.0.0.1:9/v1", llm_model="test-model")
    output, sink = built(llm, inputs_for(corpus_articles, method="llm"))
    assert output["llm_used"] is True and output["methods"]["content_classifier"] == "llm"
    page = sink.deliveries["report.html"].decode()
    assert "LLM-assisted" in page and "LLM (test-model)" in page
    assert "No LLM was configured" not in page


def test_no_articles_still_makes_a_report(settings: Settings) -> None:
    output, sink = built(settings, {"research": {"topic": "gardening", "subtopics": []}})
    assert (output["articles"], output["relevant"]) == (0, 0)
    assert "nothing found" in sink.deliveries["report.html"].decode()


class StoreSink(RecordingSink):
    """Deliverables into the real object store, the way the engine's sink keys them."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__()
        self.store = store

    def deliver(self, ctx: StageContext, name: str, data: bytes, content_type: str) -> str:
        key = f"deliverables/{ctx.execution_id}/{name}"
        return self.store.put_bytes(key, data, content_type=content_type).key


def test_report_stored_in_object_storage(
    settings: Settings, object_store: ObjectStore, corpus_articles: list[dict[str, Any]]
) -> None:
    sink = StoreSink(object_store)
    ctx = StageContext("exec-store", "report", "report_builder", "build", settings, sink)
    output = output_of(build(ctx, inputs_for(corpus_articles), {"topic": "electric vehicles"}))
    html_key = output["deliverables"]["report.html"]
    assert html_key == "deliverables/exec-store/report.html"
    page = object_store.get_bytes(html_key).decode()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    headers = {k.lower(): v for k, v in object_store.stat(html_key).items()}
    assert headers["content-type"].startswith("text/html")
    markdown = object_store.get_bytes(output["deliverables"]["report.md"]).decode()
    assert markdown.startswith("# Market research: electric vehicles")


def test_classified_copies_win_over_fetched_ones(
    settings: Settings, corpus_articles: list[dict[str, Any]]
) -> None:
    inputs = inputs_for(corpus_articles)
    output, sink = built(settings, inputs)
    assert output["articles"] == len(corpus_articles)  # fetched + classified: one per id
    assert output["relevant"] == sum(a["label"] == "relevant" for a in corpus_articles)
    # Fetch shards sort after classify ones only by luck of naming: rename them to come first.
    renamed = {("a-" + k if k.startswith("fetch") else k): v for k, v in inputs.items()}
    again, _ = built(settings, renamed)
    assert (again["articles"], again["relevant"]) == (output["articles"], output["relevant"])
    markdown = sink.deliveries["report.md"].decode()
    assert "| feed\\_fetcher | RSS/Atom fetch with conditional GET" in markdown
    assert "| rss\\_source\\_finder | feed discovery" in markdown

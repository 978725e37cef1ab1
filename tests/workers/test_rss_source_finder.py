"""``rss_source_finder.discover`` on the shipped corpus, through the real corpus HTTP server."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.errors import StageFailed, ValidationFailed
from orchestrator.sdk.testing import RecordingSink, stage_context
from orchestrator.settings import Settings
from workers.lib.corpus import CorpusServer
from workers.rss_source_finder import discover, read_page, terms_of

EV = {"topic": "electric vehicles", "keywords": ["electric vehicle", "battery", "charging"]}
COFFEE = {"topic": "specialty coffee", "keywords": ["espresso", "roaster", "barista"]}
QUANTUM = {"topic": "quantum computing", "keywords": ["qubit", "error correction"]}


def run(
    settings: Settings, research: dict[str, Any], **params: Any
) -> tuple[dict[str, Any], RecordingSink]:
    ctx, sink = stage_context("rss_source_finder", "discover", settings=settings)
    return discover(ctx, {"research": research}, {"catalogue": "builtin", **params}), sink


def sites(output: dict[str, Any]) -> list[str]:
    return [feed["url"].split("/sites/")[1].split("/")[0] for feed in output["feeds"]]


@pytest.mark.parametrize(
    ("research", "expected"),
    [
        (EV, {"voltage-weekly", "charge-point-journal"}),
        (COFFEE, {"third-wave-notes", "roasters-ledger"}),
        (QUANTUM, {"qubit-dispatch", "quantum-industry-review"}),
    ],
)
def test_finds_the_feeds_of_a_topic(
    strict: Settings, corpus_server: CorpusServer, research: dict[str, Any], expected: set[str]
) -> None:
    output, sink = run(strict, research)
    assert output["sites_scanned"] == 9
    assert output["method"] == "keyword_match"
    assert expected <= set(sites(output))
    assert not {"garden-and-table", "city-sports-desk"} & set(sites(output))
    scores = [feed["score"] for feed in output["feeds"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    for feed in output["feeds"]:
        assert set(feed) == {"url", "title", "site", "score"}
        assert feed["url"].startswith(corpus_server.url) and feed["site"].startswith(
            corpus_server.url
        )
    # the catalogue, 9 home pages, one peek at each of the 9 feeds (links found twice, once)
    assert sink.used("feed_requests") == 1 + 9 + 9
    assert sink.progress_reports[-1][0] == 100


def test_same_content_in_two_formats_is_kept_once(strict: Settings) -> None:
    output, _ = run(strict, EV)
    assert sites(output).count("voltage-weekly") == 1


def test_a_feed_linked_only_in_the_body_is_found(strict: Settings) -> None:
    output, _ = run(strict, COFFEE)
    assert any(feed["url"].endswith("/roasters-ledger/news.rss") for feed in output["feeds"])


def test_depth_scales_the_number_of_feeds(strict: Settings) -> None:
    broad = {"topic": "technology", "keywords": ["electric", "coffee", "quantum", "charging"]}
    quick, _ = run(strict, broad, depth="quick")
    standard, _ = run(strict, broad, depth="standard")
    assert len(quick["feeds"]) == 4
    assert len(standard["feeds"]) > 4


def test_an_explicit_catalogue_url_works(strict: Settings, corpus_server: CorpusServer) -> None:
    output, _ = run(strict, QUANTUM, catalogue=corpus_server.url + "/index.html")
    assert {"qubit-dispatch", "quantum-industry-review"} <= set(sites(output))


@pytest.mark.parametrize("catalogue", ["http://10.0.0.1/sites.html", "ftp://example.org/"])
def test_a_catalogue_off_limits_is_refused(strict: Settings, catalogue: str) -> None:
    with pytest.raises(ValidationFailed):
        run(strict, EV, catalogue=catalogue)


def test_nothing_to_score_by_fails(strict: Settings) -> None:
    with pytest.raises(StageFailed, match="no keywords"):
        run(strict, {"queries": []})


def test_read_page_discovers_links_and_feeds() -> None:
    html = b"""<html><head><title>  Some  site </title>
    <link rel="alternate" type="application/rss+xml" href="/feed.xml">
    <link rel="alternate" type="application/atom+xml; charset=utf-8" href="atom">
    <link rel="alternate" hreflang="de" href="/de/">
    <link rel="stylesheet" href="/style.css"></head>
    <body><a href="posts/1.html">A post</a> <a href="/podcast">Subscribe via RSS</a>
    <a href="javascript:alert(1)">x</a> <a href="/blog/rss/">feed</a></body></html>"""
    page = read_page(html, "https://site.example/home/")
    assert page.title == "Some site"
    assert list(page.feeds) == [
        "https://site.example/feed.xml",
        "https://site.example/home/atom",
        "https://site.example/podcast",
        "https://site.example/blog/rss/",
    ]
    assert "https://site.example/home/posts/1.html" in page.links
    assert not any(link.startswith("javascript") for link in page.links)


def test_terms_come_from_any_input_by_field_name() -> None:
    inputs = {"zeta": {"keywords": ["Batteries", "the grid"]}, "alpha": {"subtopics": ["V2G"]}}
    terms = terms_of(inputs, {"topic": "Electric Trucks"})
    assert ("battery",) in terms and ("grid",) in terms and ("v2g",) in terms
    assert ("electric", "truck") in terms and ("truck",) in terms

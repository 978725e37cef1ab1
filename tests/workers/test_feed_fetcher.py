"""``feed_fetcher.fetch`` and ``workers.lib.web`` on the shipped corpus, over real HTTP and
Redis."""

from __future__ import annotations

import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from orchestrator.errors import StageFailed, ValidationFailed
from orchestrator.sdk.testing import RecordingSink, stage_context
from orchestrator.settings import Settings
from workers.feed_fetcher import FeedCache, fetch
from workers.lib.corpus import CorpusServer
from workers.lib.web import RedisPacer, WebClient, check_url

VOLTAGE_RSS = "/sites/voltage-weekly/feed.rss"
VOLTAGE_ATOM = "/sites/voltage-weekly/feed.atom"
ROUNDUP = "/sites/tech-roundup/feed.rss"
QUBITS = "/sites/qubit-dispatch/feed.rss"
FIELDS = {"id", "title", "link", "summary", "published", "source", "feed_url"}


def run(
    settings: Settings, paths: list[str], base: str, **params: Any
) -> tuple[dict[str, Any], RecordingSink]:
    ctx, sink = stage_context("feed_fetcher", "fetch", settings=settings, stage_id="fetch-0")
    feeds = [{"url": base + p, "title": p, "site": base, "score": 1.0} for p in paths]
    return fetch(ctx, {"sources": {"feeds": feeds, "sites_scanned": 3}}, params), sink


def test_fetches_rss_and_atom_into_contract_articles(
    strict: Settings, corpus_server: CorpusServer
) -> None:
    output, sink = run(strict, [VOLTAGE_ATOM, QUBITS], corpus_server.url)
    assert output["feeds_fetched"] == 2
    assert (output["not_modified"], output["failed"]) == (0, [])
    articles = output["articles"]
    assert len(articles) == 11 + 12
    for article in articles:
        assert set(article) >= FIELDS
        assert "<" not in article["summary"] and article["summary"]
        assert article["link"].startswith("https://")
        datetime.fromisoformat(article["published"])
    assert {a["source"] for a in articles} == {"Voltage Weekly", "Qubit Dispatch"}
    assert {a["feed_url"] for a in articles} == {
        corpus_server.url + VOLTAGE_ATOM,
        corpus_server.url + QUBITS,
    }
    assert sink.used("feed_requests") == 2
    assert sink.progress_reports[-1][0] == 100


def test_second_fetch_is_conditional_and_answers_304(
    strict: Settings, corpus_server: CorpusServer, redis_client: redis.Redis
) -> None:
    first, _ = run(strict, [VOLTAGE_RSS, QUBITS], corpus_server.url)
    cached = FeedCache(redis_client).get(corpus_server.url + QUBITS)
    assert cached is not None and cached.etag and cached.last_modified
    second, sink = run(strict, [VOLTAGE_RSS, QUBITS], corpus_server.url)
    assert (second["feeds_fetched"], second["not_modified"]) == (2, 2)
    assert second["articles"] == first["articles"]  # a 304 still yields the feed's articles
    assert sink.used("feed_requests") == 2
    with WebClient(strict) as client:
        again = client.get(corpus_server.url + QUBITS, validators=cached.validators)
        assert again.not_modified and again.body == b""


def test_duplicates_are_dropped_by_link(strict: Settings, corpus_server: CorpusServer) -> None:
    output, _ = run(strict, [VOLTAGE_RSS, VOLTAGE_ATOM, ROUNDUP], corpus_server.url)
    ids = [a["id"] for a in output["articles"]]
    links = [a["link"] for a in output["articles"]]
    assert len(ids) == len(set(ids)) == len(set(links))
    # 11 + 11 + 11 items; the Atom copy repeats all 11, the roundup 1 of its own and 1 of ours
    assert output["duplicates"] == 13
    assert len(ids) == 20


def test_shards_take_disjoint_slices(strict: Settings, corpus_server: CorpusServer) -> None:
    paths = [
        VOLTAGE_RSS,
        QUBITS,
        "/sites/third-wave-notes/feed.rss",
        "/sites/garden-and-table/feed.rss",
    ]
    whole, _ = run(strict, paths, corpus_server.url)
    shards = [run(strict, paths, corpus_server.url, shard=i, shards=2)[0] for i in range(2)]
    got = [{a["feed_url"] for a in s["articles"]} for s in shards]
    assert got == [{corpus_server.url + p for p in paths[i::2]} for i in range(2)]
    assert sorted(a["id"] for s in shards for a in s["articles"]) == sorted(
        a["id"] for a in whole["articles"]
    )
    with pytest.raises(ValidationFailed, match="shard 2"):
        run(strict, paths, corpus_server.url, shard=2, shards=2)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/",
        "http://10.0.0.1/feed.xml",
        "http://192.168.1.20/rss",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/feed",
        "http://[::ffff:10.0.0.1]/feed",
        "http://localhost:1/feed",
        "http://100.64.0.1/feed",
        "http://0.0.0.0/feed",
        "file:///etc/passwd",
    ],
)
def test_private_and_odd_urls_are_refused_without_traffic(strict: Settings, url: str) -> None:
    with pytest.raises(ValidationFailed, match="refused"):
        check_url(url, strict)


def test_public_addresses_and_the_corpus_origin_pass(
    strict: Settings, corpus_server: CorpusServer
) -> None:
    check_url("https://93.184.215.14/feed", strict)  # a check only: nothing is sent anywhere
    check_url(corpus_server.url + VOLTAGE_RSS, strict)
    with pytest.raises(ValidationFailed):
        check_url(f"http://127.0.0.1:{corpus_server.port + 1}/feed.rss", strict)
    check_url("http://10.0.0.1/feed", strict.with_overrides(allow_private_urls=True))


def test_refused_feeds_fail_alone_and_cost_no_request(
    strict: Settings, corpus_server: CorpusServer
) -> None:
    ctx, sink = stage_context("feed_fetcher", "fetch", settings=strict)
    refused = ["http://127.0.0.1:1/", "http://10.0.0.1/feed.xml"]
    inputs = {"sources": {"feeds": [{"url": u} for u in refused]}}
    with pytest.raises(StageFailed, match="every feed failed") as caught:
        fetch(ctx, inputs, {"feeds": [corpus_server.url + QUBITS], "shard": 1, "shards": 2})
    assert [f["url"] for f in caught.value.details["failed"]] == [refused[1]]
    assert sink.used("feed_requests") == 0
    mixed = {"sources": {"feeds": [*refused, corpus_server.url + QUBITS]}}
    ctx, sink = stage_context("feed_fetcher", "fetch", settings=strict)
    output = fetch(ctx, mixed, {})
    assert [f["url"] for f in output["failed"]] == refused
    assert "private, loopback" in output["failed"][0]["error"]
    assert output["feeds_fetched"] == 1 and len(output["articles"]) == 12
    assert sink.used("feed_requests") == 1


def test_size_cap_on_declared_length(strict: Settings, corpus_server: CorpusServer) -> None:
    with pytest.raises(StageFailed, match=r"every feed failed.*cap"):
        run(strict, [QUBITS], corpus_server.url, max_bytes=1000)


class Endless(BaseHTTPRequestHandler):
    """A feed with no Content-Length that never ends: the cap must stop the read."""

    sent = 0

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.end_headers()
        chunk = b"<!-- padding -->" * 4096
        try:
            for _ in range(4096):  # 256 MiB if nobody stops reading
                self.wfile.write(chunk)
                type(self).sent += len(chunk)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_size_cap_stops_streaming(settings: Settings) -> None:
    endless = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=endless.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{endless.server_address[1]}/feed.rss"
        with WebClient(settings, max_bytes=100_000) as client, pytest.raises(StageFailed) as got:
            client.get(url)
        assert "stopped reading" in str(got.value)
    finally:
        endless.shutdown()
        endless.server_close()
    assert Endless.sent < 64 * 2**20


def test_politeness_spaces_requests_to_one_host(redis_client: redis.Redis) -> None:
    pacer = RedisPacer(redis_client)
    assert pacer.wait("feeds.example:443", 1.0) == 0.0
    assert redis_client.pttl("orch:politeness:feeds.example:443") > 0
    assert pacer.wait("feeds.example:443", 1.0) > 0  # had to wait for its turn
    assert pacer.wait("other.example:443", 1.0) == 0.0  # other hosts are not held up


def test_finds_feeds_by_field_name_and_param(strict: Settings, corpus_server: CorpusServer) -> None:
    ctx, _ = stage_context("feed_fetcher", "fetch", settings=strict)
    inputs = {
        "finder-b": {"feeds": [{"url": corpus_server.url + QUBITS}]},
        "research": {"keywords": ["qubit"]},
        "finder-a": {
            "feeds": [{"url": corpus_server.url + QUBITS}, {"url": corpus_server.url + VOLTAGE_RSS}]
        },
    }
    output = fetch(ctx, inputs, {"feeds": [corpus_server.url + ROUNDUP], "depth": "quick"})
    assert output["feeds_fetched"] == 3
    per_feed = {
        u: sum(a["feed_url"] == u for a in output["articles"]) for u in [corpus_server.url + QUBITS]
    }
    assert per_feed[corpus_server.url + QUBITS] == 10  # quick keeps 10 items per feed

"""``rss_source_finder.discover``: feeds about a topic, found on the sites of a catalogue.

Reads the catalogue page (the shipped corpus by default), then each site's home page, and
discovers feeds the way feed readers do: ``<link rel="alternate">`` with an RSS or Atom type,
plus ``<a>`` links that look like feeds. Each candidate is fetched once (a peek, size-capped)
and scored by how many of its items mention the topic's keywords; the same content offered
twice (RSS and Atom of one site) is kept once. The best feeds are returned, more with depth.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from orchestrator.errors import OrchestratorError, StageFailed, ValidationFailed
from orchestrator.sdk import StageContext, WorkerType
from workers.lib.contract import depth_of, outputs
from workers.lib.corpus import ensure_corpus_server
from workers.lib.feeds import ParsedFeed, parse_feed
from workers.lib.web import RedisPacer, WebClient, shared_redis

log = logging.getLogger(__name__)

rss_source_finder = WorkerType(
    "rss_source_finder",
    display_name="RSS source finder",
    capabilities=["feed_discovery"],
    requirements={"resources": ["feed_requests"]},
)

#: (sites scanned at most, feeds returned) by depth.
LIMITS = {"quick": (10, 4), "standard": (25, 8), "comprehensive": (60, 16)}
FEED_TYPES = {"application/rss+xml", "application/atom+xml", "application/feed+xml"}
FEED_PATH = re.compile(r"(\.(rss|atom|xml)|/(feed|rss|atom)(\.xml)?/?)$", re.IGNORECASE)
FEED_TEXT = re.compile(r"\b(rss|atom)\b", re.IGNORECASE)
#: Feeds scoring below this are mostly about something else (one on-topic item in seven).
MIN_SCORE = 0.15
#: A peek reads at most this much of a candidate feed.
PEEK_BYTES = 512 * 1024
#: Two feeds sharing this share of their item links carry the same content.
SAME_CONTENT = 0.8
_STOPWORDS = "a an and are as at by for from in into is of on or the to with what how why new"
STOPWORDS = frozenset(_STOPWORDS.split())


@dataclass
class Page:
    """What discovery needs from an HTML page: its title, links and feed links."""

    url: str
    title: str = ""
    links: list[str] = field(default_factory=list)
    feeds: dict[str, str] = field(default_factory=dict)  # url -> title hint


class _PageParser(HTMLParser):
    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self._in_title = False
        self._anchor: str | None = None
        self._anchor_text: list[str] = []

    def _url(self, href: str | None) -> str:
        absolute = urldefrag(urljoin(self.page.url, (href or "").strip()))[0]
        return absolute if urlsplit(absolute).scheme in {"http", "https"} else ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "title":
            self._in_title = True
        elif tag == "link":
            rels = values.get("rel", "").lower().split()
            kind = values.get("type", "").lower().split(";")[0].strip()
            if "alternate" in rels and kind in FEED_TYPES and (url := self._url(values["href"])):
                self.page.feeds.setdefault(url, values.get("title", ""))
        elif tag == "a" and (url := self._url(values.get("href"))):
            self._anchor, self._anchor_text = url, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "a" and self._anchor:
            text = " ".join("".join(self._anchor_text).split())
            self.page.links.append(self._anchor)
            if FEED_PATH.search(urlsplit(self._anchor).path) or FEED_TEXT.search(text):
                self.page.feeds.setdefault(self._anchor, "")
            self._anchor = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.page.title += data
        if self._anchor is not None:
            self._anchor_text.append(data)


def read_page(body: bytes, url: str) -> Page:
    """Title, links and feed links of an HTML page (relative URLs resolved against ``url``)."""
    page = Page(url)
    parser = _PageParser(page)
    parser.feed(body.decode("utf-8", errors="replace"))
    parser.close()
    page.title = " ".join(page.title.split())
    page.links = list(dict.fromkeys(page.links))
    return page


def _stem(word: str) -> str:
    """A light suffix stripper: batteries/battery, roasting/roasters/roast, charging/charge."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    if len(word) > 6 and word.endswith("ing"):
        word = word[:-3]
    if len(word) > 4 and word.endswith("er"):
        word = word[:-2]
    return word[:-1] if len(word) > 4 and word.endswith("e") else word


def words(text: str) -> set[str]:
    """Lower-cased, lightly stemmed word set of ``text``."""
    found = re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower())
    return {_stem(w) for word in found for w in {word, *word.split("-")}}


def terms_of(inputs: dict[str, Any], params: dict[str, Any]) -> list[tuple[str, ...]]:
    """Keywords, subtopics and the topic from any input (or params), as stemmed word tuples."""
    phrases: list[str] = []
    sources = [*outputs(inputs), params]
    for source in sources:
        phrases.extend(str(k) for k in source.get("keywords") or [])
        phrases.extend(str(s) for s in source.get("subtopics") or [])
        if source.get("topic"):
            phrases.append(str(source["topic"]))
    topic = next((str(s["topic"]) for s in sources if s.get("topic")), "")
    terms = []
    for phrase in phrases:
        stemmed = tuple(sorted(words(phrase) - STOPWORDS))
        if stemmed:
            terms.append(stemmed)
    # Each word of the topic counts on its own too: an item on "electric trucks" is on topic.
    terms += [(word,) for word in sorted(words(topic) - STOPWORDS) if len(word) > 2]
    return list(dict.fromkeys(terms))


def score(feed: ParsedFeed, terms: list[tuple[str, ...]]) -> float:
    """0..1: mostly the share of items that mention a term, partly how many terms appear."""
    if not feed.articles or not terms:
        return 0.0
    hits, matched = 0, set()
    for article in feed.articles:
        bag = words(f"{article['title']} {article['summary']}")
        found = {term for term in terms if set(term) <= bag}
        hits += bool(found)
        matched |= found
    coverage = len(matched) / min(len(terms), 10)
    return round(0.75 * hits / len(feed.articles) + 0.25 * min(coverage, 1.0), 3)


def _links(feed: ParsedFeed) -> set[str]:
    return {a["link"] or a["id"] for a in feed.articles}


@rss_source_finder.action("discover")
def discover(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Scan the catalogue's sites for feeds and return the best ones for the topic."""
    max_sites, max_feeds = LIMITS[depth_of(params)]
    terms = terms_of(inputs, params)
    if not terms:
        raise StageFailed("no keywords, subtopics or topic in the inputs or params to score by")
    catalogue = str(params.get("catalogue") or "builtin")
    if catalogue == "builtin":
        catalogue = ensure_corpus_server(ctx.settings) + "/index.html"
    elif urlsplit(catalogue).scheme not in {"http", "https"}:
        raise ValidationFailed(f'catalogue must be "builtin" or an http(s) URL, not {catalogue!r}')
    redis_client = shared_redis(ctx.settings)
    with WebClient(ctx.settings, pacer=RedisPacer(redis_client)) as client:
        try:
            return _discover(ctx, client, catalogue, terms, max_sites, max_feeds)
        finally:
            ctx.usage("feed_requests", client.requests)


def _discover(
    ctx: StageContext,
    client: WebClient,
    catalogue: str,
    terms: list[tuple[str, ...]],
    max_sites: int,
    max_feeds: int,
) -> dict[str, Any]:
    ctx.progress(2, f"reading the catalogue {catalogue}")
    index = read_page(client.get(catalogue).body, catalogue)
    sites = [url for url in index.links if url != catalogue][:max_sites]
    candidates: dict[str, str] = {}  # feed url -> the site it was found on
    scanned = 0
    for number, site in enumerate(sites, 1):
        ctx.progress(5 + 45 * number / len(sites), f"scanning {site}")
        try:
            page = read_page(client.get(site).body, site)
        except OrchestratorError as exc:
            log.info("site %s skipped: %s", site, exc)
            continue
        scanned += 1
        for url in page.feeds:
            candidates.setdefault(url, site)
    if sites and not scanned:
        raise StageFailed(f"none of the {len(sites)} sites of {catalogue} could be read")
    scored: list[tuple[float, int, str, ParsedFeed, str]] = []
    for number, (url, site) in enumerate(candidates.items()):
        ctx.progress(50 + 48 * (number + 1) / len(candidates), f"peeking at {url}")
        try:
            feed = parse_feed(client.get(url, max_bytes=PEEK_BYTES).body, url)
        except OrchestratorError as exc:
            log.info("feed %s skipped: %s", url, exc)
            continue
        if feed.is_feed and (value := score(feed, terms)) >= MIN_SCORE:
            scored.append((value, -number, url, feed, site))
    chosen: list[dict[str, Any]] = []
    kept: list[set[str]] = []
    for value, _, url, feed, site in sorted(scored, key=lambda s: s[:2], reverse=True):
        links = _links(feed)
        if any(len(links & other) >= SAME_CONTENT * min(len(links), len(other)) for other in kept):
            continue  # the same items in another format: one copy is enough
        kept.append(links)
        chosen.append({"url": url, "title": feed.title, "site": site, "score": value})
        if len(chosen) == max_feeds:
            break
    ctx.progress(100, f"{len(chosen)} feeds from {scanned} sites")
    return {"feeds": chosen, "sites_scanned": scanned, "method": "keyword_match"}

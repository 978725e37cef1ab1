"""``feed_fetcher.fetch``: the articles of the feeds found upstream, fetched politely.

Feeds come from every input's ``feeds`` (and an optional ``feeds`` param of URLs); a sharded
copy takes ``feeds[shard::shards]``. Each feed is fetched with conditional GET: the ETag and
Last-Modified of the last good copy, and that copy's articles, are kept in Redis per feed URL
(``FeedCache``), so a 304 costs a request but still yields the feed's articles. Articles are
de-duplicated by id (a hash of link or guid) across the shard's feeds. An unreachable or
refused feed goes to ``failed``; the stage fails only when every feed failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.constants import redis_key
from orchestrator.errors import OrchestratorError, StageFailed, TransientStageError
from orchestrator.sdk import StageContext, WorkerType
from workers.lib.contract import depth_of, outputs, shard_of
from workers.lib.corpus import ensure_corpus_server, is_corpus_url
from workers.lib.feeds import parse_feed
from workers.lib.web import MAX_BYTES, RedisPacer, Validators, WebClient, shared_redis

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

feed_fetcher = WorkerType(
    "feed_fetcher",
    display_name="Feed fetcher",
    capabilities=["rss", "atom", "conditional_get"],
    requirements={"resources": ["feed_requests"]},
)

#: Articles kept per feed, by depth.
ITEMS_PER_FEED = {"quick": 10, "standard": 25, "comprehensive": 60}
#: How long a feed's validators and articles are kept for conditional GET.
CACHE_TTL_S = 7 * 24 * 3600


@dataclass
class CachedFeed:
    """The last good copy of a feed: its validators and the articles parsed from it."""

    etag: str | None = None
    last_modified: str | None = None
    title: str = ""
    articles: list[dict[str, Any]] = field(default_factory=list)

    @property
    def validators(self) -> Validators:
        return Validators(self.etag, self.last_modified)


class FeedCache:
    """Validators and articles per feed URL in Redis, shared by every fetcher process."""

    def __init__(self, client: redis.Redis, ttl_s: int = CACHE_TTL_S) -> None:
        self.client = client
        self.ttl_s = ttl_s

    @staticmethod
    def key(url: str) -> str:
        return redis_key("feed", hashlib.sha256(url.encode()).hexdigest()[:32])

    def get(self, url: str) -> CachedFeed | None:
        raw = self.client.get(self.key(url))
        return CachedFeed(**json.loads(raw)) if raw else None

    def put(self, url: str, feed: CachedFeed) -> None:
        self.client.set(self.key(url), json.dumps(asdict(feed)), ex=self.ttl_s)


def feeds_of(inputs: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Feed URLs from every input's ``feeds`` and the ``feeds`` param, first occurrence kept."""
    found: list[Any] = []
    for output in outputs(inputs):  # stage id order: every shard slices the same list
        found.extend(output.get("feeds") or [])
    found.extend(params.get("feeds") or [])
    urls = [f["url"] if isinstance(f, dict) else str(f) for f in found]
    return list(dict.fromkeys(u.strip() for u in urls if u and u.strip()))


@feed_fetcher.action("fetch")
def fetch(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Fetch this shard's feeds (conditional GET, size cap, politeness) into articles."""
    urls = shard_of(feeds_of(inputs, params), params)
    max_items = ITEMS_PER_FEED[depth_of(params)]
    if any(is_corpus_url(url, ctx.settings) for url in urls):
        ensure_corpus_server(ctx.settings)  # verified ours (or served) before it is trusted
    redis_client = shared_redis(ctx.settings)
    cache = FeedCache(redis_client)
    interval = params.get("host_interval_s")
    client = WebClient(
        ctx.settings,
        pacer=RedisPacer(redis_client),
        host_interval_s=None if interval is None else float(interval),
        max_bytes=int(params.get("max_bytes") or MAX_BYTES),
    )
    articles: dict[str, dict[str, Any]] = {}
    failed: list[dict[str, str]] = []
    fetched = not_modified = duplicates = 0
    errors: list[OrchestratorError] = []
    with client:
        try:
            for index, url in enumerate(urls):
                ctx.progress(100 * index / max(len(urls), 1), f"fetching {url}")
                try:
                    feed, was_current = _fetch_one(client, cache, url, max_items)
                except OrchestratorError as exc:
                    log.info("feed %s failed: %s", url, exc)
                    failed.append({"url": url, "error": str(exc)})
                    errors.append(exc)
                    continue
                fetched += 1
                not_modified += was_current
                for article in feed.articles:
                    if article["id"] in articles:
                        duplicates += 1
                    else:
                        articles[article["id"]] = article
        finally:
            ctx.usage("feed_requests", client.requests)
    if urls and len(failed) == len(urls):
        transient = any(isinstance(e, TransientStageError) for e in errors)
        kind = TransientStageError if transient else StageFailed
        raise kind(f"every feed failed, first: {failed[0]['error']}", details={"failed": failed})
    ctx.progress(100, f"{len(articles)} articles from {fetched} feeds")
    return {
        "articles": list(articles.values()),
        "feeds_fetched": fetched,
        "not_modified": not_modified,
        "failed": failed,
        "duplicates": duplicates,
        "method": "conditional_get",
    }


def _fetch_one(
    client: WebClient, cache: FeedCache, url: str, max_items: int
) -> tuple[CachedFeed, bool]:
    """One feed: its articles and whether the server said our copy is current (304)."""
    cached = cache.get(url)
    response = client.get(url, validators=cached.validators if cached else None)
    if response.not_modified and cached is not None:
        cached.articles = cached.articles[:max_items]
        return cached, True
    if response.not_modified:
        raise StageFailed(f"{url} answered 304 to an unconditional request")
    parsed = parse_feed(response.body, url, max_items=max_items)
    if not parsed.is_feed:
        raise StageFailed(f"{url} is not an RSS or Atom feed")
    feed = CachedFeed(
        response.validators.etag, response.validators.last_modified, parsed.title, parsed.articles
    )
    if feed.etag or feed.last_modified:
        cache.put(url, feed)
    return feed, False

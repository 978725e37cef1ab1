"""RSS and Atom bodies to the contract's articles (feedparser), shared by the feed workers.

Feed content is untrusted: summaries become plain text here, links other than http(s) are
dropped, and every field is bounded, so nothing downstream ever handles feed markup.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urlsplit

import feedparser

from workers.lib.contract import stable_id

SUMMARY_CHARS = 600
TITLE_CHARS = 300


@dataclass(frozen=True)
class ParsedFeed:
    """What a body held: a feed (``version`` set) with its title and articles, or not a feed."""

    title: str
    version: str
    articles: list[dict[str, Any]]

    @property
    def is_feed(self) -> bool:
        return bool(self.version) or bool(self.articles)


class _TextExtractor(HTMLParser):
    """Text content of an HTML fragment, without scripts and styles (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"script", "style"}:
            self._skip += 1
        elif tag in {"p", "br", "li", "div"}:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style"} and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def plain_text(fragment: str, limit: int | None = SUMMARY_CHARS) -> str:
    """An HTML fragment as one line of plain text, cut at a word boundary under ``limit``
    (``None``: never cut). The one HTML-to-text of the workers."""
    extractor = _TextExtractor()
    extractor.feed(fragment or "")
    extractor.close()
    text = re.sub(r"\s+", " ", "".join(extractor.parts)).strip()
    if limit is None or len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def safe_link(link: str | None) -> str:
    """``link`` without its fragment if it is http(s); anything else (``javascript:``) is ''."""
    link = (link or "").strip()
    if urlsplit(link).scheme not in {"http", "https"}:
        return ""
    return urldefrag(link)[0]


def _published(entry: Any) -> str | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if not parsed:
        return None
    return datetime.fromtimestamp(calendar.timegm(parsed), UTC).isoformat()


def parse_feed(body: bytes, url: str, *, max_items: int | None = None) -> ParsedFeed:
    """Parse an RSS or Atom body fetched from ``url`` into contract articles."""
    parsed = feedparser.parse(body, response_headers={"content-location": url})
    title = plain_text(parsed.feed.get("title", ""), TITLE_CHARS) or urlsplit(url).netloc
    articles = []
    for entry in parsed.entries[:max_items]:
        link = safe_link(entry.get("link"))
        guid = str(entry.get("id") or "")
        if not link and not guid:
            continue
        summary = entry.get("summary") or ""
        if not summary and entry.get("content"):
            summary = entry.content[0].get("value", "")
        articles.append(
            {
                "id": stable_id(link or guid),
                "title": plain_text(entry.get("title", ""), TITLE_CHARS) or "(untitled)",
                "link": link,
                "summary": plain_text(summary),
                "published": _published(entry),
                "source": title,
                "feed_url": url,
            }
        )
    return ParsedFeed(title=title, version=parsed.get("version", "") or "", articles=articles)

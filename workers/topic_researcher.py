"""``topic_researcher.expand``: a topic into subtopics, keywords and search queries.

Offline it reads text about the topic (the upstream articles if there are any, else the
feeds shipped in ``workers/corpus/``), one document per headline, with the sources' own names
cut out. It keeps the documents that name the topic (plus, by pseudo-relevance feedback, those
sharing their distinctive words) and extracts the noun phrases that several of them use and
other texts rarely do (RAKE candidates weighted by a contrastive inverse document frequency;
phrases before lone words). Market-research facets from a small vocabulary, ranked by how
often their cue words occur near the topic, fill what the text does not give: an unknown
topic gets the facets alone. With an LLM configured it asks the model for the same JSON and
validates it, falling back to the offline method (and saying so) when the reply is unusable.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.errors import ValidationFailed
from orchestrator.sdk import StageContext, StageResult, WorkerType
from workers.lib.contract import articles_in, depth_of
from workers.lib.llm import LLMClient, ask_json
from workers.lib.text import (
    FACETS,
    acronym,
    article_text,
    candidate_phrases,
    coverage,
    plain,
    string_list,
    surface_forms,
    tokens,
)

log = logging.getLogger(__name__)

topic_researcher = WorkerType(
    "topic_researcher",
    display_name="Topic researcher",
    capabilities=["topic-expansion", "keyword-extraction", "query-generation", "llm-optional"],
    requirements={"optional_resources": ["openai_api"]},
)

#: How many of each to produce per depth: (subtopics, keywords, queries).
COUNTS = {"quick": (3, 8, 4), "standard": (5, 12, 8), "comprehensive": (8, 20, 14)}

#: On-topic documents that must use a phrase before it is a keyword or subtopic.
MIN_SUPPORT = 2
#: Documents naming the whole topic needed before their words are trusted for feedback.
FEEDBACK_CORE = 5

#: The shipped demo corpus (feeds and pages); read when present, never required.
CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


def _facets(topic: str, relevant: list[list[str]]) -> list[str]:
    """Facet subtopics, the ones whose cue words the topic's documents use most first."""
    hits = Counter({facet: 0 for facet in FACETS})
    for doc in relevant:
        present = set(doc)
        for facet, cues in FACETS.items():
            hits[facet] += sum(1 for cue in cues if cue in present)
    order = sorted(FACETS, key=lambda facet: (-hits[facet], list(FACETS).index(facet)))
    return [f"{topic} {facet}" for facet in order]


def _on_topic(terms: tuple[str, ...], docs: list[list[str]]) -> list[int]:
    """Documents naming the whole topic (or its acronym: "ev" for "electric vehicles"), then,
    by pseudo-relevance feedback, those that share the first kind's distinctive words: two of
    them ("arabica", "roasters" for coffee), or one when the text names half the topic
    ("electric" cars that charge join; "electric roasting machines" do not)."""
    wanted = set(terms)
    core = [i for i, doc in enumerate(docs) if coverage(terms, set(doc)) == 1.0]
    need = max(1, math.ceil(len(wanted) / 2))
    partial = {i for i, doc in enumerate(docs) if i not in core and len(wanted & set(doc)) >= need}
    if len(core) < FEEDBACK_CORE:  # too few to learn from: take every half-match
        return sorted({*core, *partial})
    in_core = Counter(t for i in core for t in set(docs[i]) - wanted)
    anywhere = Counter(t for doc in docs for t in set(doc))
    distinctive = {t for t, n in in_core.items() if n >= 2 and n >= 0.5 * anywhere[t]}
    joined = [
        i
        for i, doc in enumerate(docs)
        if i not in core and len(distinctive & set(doc)) >= (1 if i in partial else 2)
    ]
    return sorted(core + joined)


def _overlaps(phrase: tuple[str, ...], chosen: list[tuple[str, ...]]) -> bool:
    return any(set(phrase) & set(other) for other in chosen)


def expand_offline(
    topic: str, depth: str, texts: list[str], names: Iterable[str] = ()
) -> dict[str, Any]:
    """Subtopics, keywords and queries for ``topic`` mined from ``texts`` (may be empty).

    ``names`` are the sources' own names (feed and site titles): they recur in every text a
    source publishes ("Via Charge Point Journal: ...") and are no keyword, so they are cut out
    of the texts before phrases are counted.
    """
    n_sub, n_kw, n_q = COUNTS[depth]
    texts = list(dict.fromkeys(texts))
    topic_terms = tuple(tokens(topic)) or tuple(topic.lower().split())
    short = acronym(topic_terms)
    cut = _name_pattern(names)
    mined = [cut.sub(" | ", text) if cut else text for text in texts]
    docs = [tokens(text) for text in mined]
    relevant = _on_topic(topic_terms, docs)
    if len(relevant) < MIN_SUPPORT:  # one text is an anecdote, not a topic's vocabulary
        relevant = []
    phrases_of = [candidate_phrases(text) for text in mined]
    df_all = Counter(p for phrases in phrases_of for p in set(phrases))
    df_rel = Counter(p for i in relevant for p in set(phrases_of[i]))
    seen = Counter(p for i in relevant for p in phrases_of[i])
    total = len(texts)
    topic_set = set(topic_terms)

    def score(phrase: tuple[str, ...]) -> float:
        """On-topic documents using it, rare elsewhere; a longer phrase says more."""
        rarity = max(math.log((total + 1) / (df_all[phrase] + 0.5)), 0.1)
        weight = (df_rel[phrase] + 0.5 * (seen[phrase] - df_rel[phrase])) * rarity
        weight *= 1 + 0.5 * (len(phrase) - 1)
        return weight * (0.5 if set(phrase) & topic_set else 1.0)

    # Only phrases that several on-topic documents share, or that one repeats: one article's
    # passing word ("earn", "EFTA") is no keyword. Too little text on the topic leaves facets.
    ranked = sorted(
        (
            p
            for p in df_rel
            if (df_rel[p] >= MIN_SUPPORT or (len(p) > 1 and seen[p] >= MIN_SUPPORT))
            and not set(p) <= topic_set | {short}
            and p[-1] not in topic_set | {short}  # "public EV" qualifies the topic, no more
            and not _generic(p)
            and (len(p) > 1 or _distinctive(df_rel[p], df_all[p]))
        ),
        key=lambda p: (-score(p), p),
    )
    forms = {
        key: " ".join(w.upper() if short and w == short else w for w in form.split())
        for key, form in surface_forms(mined[i] for i in relevant).items()
    }
    chosen: list[tuple[str, ...]] = []
    for phrase in sorted(ranked, key=lambda p: df_rel[p] < MIN_SUPPORT):  # shared ones first
        if len(chosen) >= max(1, n_sub - 2):  # keep room for the two strongest facets
            break
        if len(phrase) >= 2 and not _overlaps(phrase, chosen) and not _variant(phrase, topic_terms):
            chosen.append(phrase)
    subtopics = [forms.get(p, " ".join(p)) for p in chosen]
    for facet in _facets(topic, [docs[i] for i in relevant]):
        if len(subtopics) >= n_sub:
            break
        subtopics.append(facet)
    keywords = [topic.lower()]
    taken: list[tuple[str, ...]] = []
    for phrase in sorted(ranked, key=lambda p: len(p) == 1):  # phrases first, then words
        if len(keywords) >= n_kw:
            break
        if len(phrase) == 1 and any(phrase[0] in other for other in taken):
            continue  # "brew" says nothing "cold brew" did not
        if len(phrase) > 1 and any(_within(phrase, other) for other in taken):
            continue  # "error correction" is in "quantum error correction"
        taken.append(phrase)
        keywords = _dedupe([*keywords, forms.get(phrase, " ".join(phrase))])
    queries = _queries(topic, subtopics, keywords, n_q)
    return {
        "topic": topic,
        "depth": depth,
        "subtopics": subtopics,
        "keywords": keywords[:n_kw],
        "queries": queries,
        "method": "offline",
        "documents_read": total,
        "documents_on_topic": len(relevant),
    }


def _distinctive(on_topic: int, everywhere: int) -> bool:
    """A lone word is a keyword only when several on-topic texts use it, and mostly they."""
    return on_topic >= MIN_SUPPORT + 1 and on_topic >= 0.8 * everywhere


def _variant(phrase: tuple[str, ...], topic_terms: tuple[str, ...]) -> bool:
    """Another name for the topic ("electric car", "quantum computers"): no subtopic of it."""
    same = sum(a == b for a, b in zip(phrase, topic_terms, strict=False))
    return len(phrase) == len(topic_terms) and same == len(topic_terms) - 1


def _within(phrase: tuple[str, ...], other: tuple[str, ...]) -> bool:
    """Whether ``phrase`` is a contiguous part of ``other`` (or the other way round)."""
    short, long = sorted((phrase, other), key=len)
    return any(long[i : i + len(short)] == short for i in range(len(long) - len(short) + 1))


def _name_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern matching any source name, with or without a leading "The"."""
    variants = set()
    for name in names:
        name = " ".join(plain(name).split())
        if len(name) > 2:
            variants |= {name, re.sub(r"(?i)^the\s+", "", name)}
    if not variants:
        return None
    alternatives = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _generic(phrase: tuple[str, ...]) -> bool:
    """Single short words and bare facet cue words say nothing specific about a topic."""
    return len(phrase) == 1 and (len(phrase[0]) < 4 or phrase[0] in _CUES)


_CUES = frozenset(cue for cues in FACETS.values() for cue in cues)


def _dedupe(items: list[str]) -> list[str]:
    """Items in order, case-insensitive duplicates dropped."""
    kept: dict[str, str] = {}
    for item in items:
        kept.setdefault(item.lower(), item)
    return list(kept.values())


def _queries(topic: str, subtopics: list[str], keywords: list[str], count: int) -> list[str]:
    """Search queries: the topic with each subtopic, then with keywords, then news angles."""
    lowered = topic.lower()
    candidates = [s if lowered in s.lower() else f"{topic} {s}" for s in subtopics]
    candidates += [f"{topic} {k}" for k in keywords if k.lower() not in lowered]
    angles = ("news", "market trends", "industry analysis", "outlook", "statistics", "startups")
    candidates += [f"{topic} {angle}" for angle in angles]
    return _dedupe(candidates)[:count]


@lru_cache(maxsize=4)
def _corpus_feeds(root: Path) -> tuple[tuple[str, tuple[dict[str, Any], ...]], ...]:
    """(feed title, entries as title and summary) of every RSS/Atom feed under ``root``."""
    import feedparser

    if not root.is_dir():
        return ()
    feeds = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in {".xml", ".rss", ".atom"}:
            parsed = feedparser.parse(path.read_bytes())
            entries = tuple(
                {"title": e.get("title"), "summary": e.get("summary")} for e in parsed.entries
            )
            feeds.append((plain(parsed.feed.get("title")), entries))
    return tuple(feeds)


def corpus_texts(root: Path = CORPUS_DIR) -> tuple[str, ...]:
    """Entry texts of the feeds (RSS/Atom) shipped under ``root``, if any.

    The sites' HTML pages are left out: they repeat the feed headlines next to navigation
    and site names, which would pass for recurring phrases.
    """
    return tuple(one_per_story([a for _, entries in _corpus_feeds(root) for a in entries]))


def one_per_story(articles: list[dict[str, Any]]) -> list[str]:
    """The texts of ``articles``, one per headline: a story in two feeds (RSS and Atom of a
    site, or republished "via" another) is one document, or its phrases would pass for
    recurring ones."""
    texts: dict[str, str] = {}
    for article in articles:
        text = article_text(article)
        if text:
            texts.setdefault(plain(article.get("title")).lower() or text, text)
    return list(texts.values())


def corpus_names(root: Path = CORPUS_DIR) -> tuple[str, ...]:
    """The names of the shipped sources: feed titles and the sites' page titles."""
    pages = root.glob("sites/*/index.html") if root.is_dir() else []
    titles = [_PAGE_TITLE.search(page.read_text(errors="replace")) for page in sorted(pages)]
    found = [title for title, _ in _corpus_feeds(root)] + [plain(t[1]) for t in titles if t]
    return tuple(dict.fromkeys(name for name in found if name))


_PAGE_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def expand_with_llm(
    ctx: StageContext, client: LLMClient, topic: str, depth: str
) -> dict[str, Any] | None:
    """The model's expansion, validated; None when the reply is unusable."""
    n_sub, n_kw, n_q = COUNTS[depth]
    reply = ask_json(
        ctx,
        client,
        [
            {
                "role": "system",
                "content": "You are a market-research analyst. Answer with one JSON object only.",
            },
            {
                "role": "user",
                "content": (
                    f"Expand the research topic {topic!r} for a {depth} market scan. Return "
                    f'{{"subtopics": [{n_sub} short subtopics], "keywords": [{n_kw} keywords '
                    f'or key phrases], "queries": [{n_q} web or news search queries]}}.'
                ),
            },
        ],
        max_tokens=200 + 25 * (n_sub + n_kw + n_q),
    )
    if reply is None:
        return None
    subtopics = string_list(reply.get("subtopics"), limit=n_sub)
    keywords = string_list(reply.get("keywords"), limit=n_kw)
    queries = string_list(reply.get("queries"), limit=n_q)
    if not (subtopics and keywords and queries):
        log.warning("LLM expansion of %r lacked subtopics, keywords or queries", topic)
        return None
    return {
        "topic": topic,
        "depth": depth,
        "subtopics": subtopics,
        "keywords": keywords,
        "queries": queries,
        "method": "llm",
    }


@topic_researcher.action("expand")
def expand(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> StageResult:
    """Expand ``topic`` into subtopics, keywords and queries (``depth`` scales the counts)."""
    topic = plain(params.get("topic"))
    if not topic:
        raise ValidationFailed("topic_researcher.expand needs a non-empty 'topic'")
    depth = depth_of(params)
    ctx.progress(5, f"expanding {topic!r} ({depth})")
    output: dict[str, Any] | None = None
    note = ""
    client = LLMClient.from_settings(ctx.settings)
    if client is not None:
        with client:
            ctx.progress(20, "asking the LLM")
            output = expand_with_llm(ctx, client, topic, depth)
        if output is None:
            note = "the LLM reply was not the JSON asked for; used the offline method"
    if output is None:
        # The run's own articles when it has any; the shipped corpus otherwise.
        articles = articles_in(inputs)
        texts = one_per_story(articles) or list(corpus_texts())
        names = {str(a.get("source") or "") for a in articles} if articles else corpus_names()
        ctx.progress(40, f"mining {len(texts)} texts for phrases about {topic!r}")
        output = expand_offline(topic, depth, texts, names)
        if note:
            output["note"] = note
    ctx.progress(100, f"{len(output['subtopics'])} subtopics, {len(output['keywords'])} keywords")
    return StageResult(output=output, items_processed=len(output["keywords"]))

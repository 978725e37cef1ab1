"""``topic_researcher.expand``: a topic into subtopics, keywords and search queries.

Offline it reads text about the topic (the upstream articles if there are any, else the
feeds shipped in ``workers/corpus/``), keeps the documents that mention the topic and extracts the
noun phrases that are frequent there and rare elsewhere (RAKE candidates weighted by a
contrastive inverse document frequency). Market-research facets from a small vocabulary,
ranked by how often their cue words occur near the topic, fill what the text does not
give. With an LLM configured it asks the model for the same JSON and validates it, falling
back to the offline method (and saying so) when the reply is unusable.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.errors import ValidationFailed
from orchestrator.llm import LLMClient, ask_json
from orchestrator.sdk import StageContext, StageResult, WorkerType
from workers.text import (
    FACETS,
    article_text,
    articles_in,
    candidate_phrases,
    coverage,
    depth_of,
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
    """Documents naming the whole topic (or its acronym: "ev" for "electric vehicles"), then
    those naming half of it that share at least two words with the first kind (pseudo-
    relevance feedback: "electric cars" joins, "electric roasting machines" does not)."""
    wanted = set(terms)
    core = [i for i, doc in enumerate(docs) if coverage(terms, set(doc)) == 1.0]
    need = max(1, math.ceil(len(wanted) / 2))
    partial = [i for i, doc in enumerate(docs) if i not in core and len(wanted & set(doc)) >= need]
    if len(core) < 3:
        return sorted(core + partial)
    shared = Counter(t for i in core for t in set(docs[i]) - wanted)
    vocabulary = {t for t, n in shared.items() if n >= 2}
    return sorted(core + [i for i in partial if len(vocabulary & set(docs[i])) >= 2])


def _overlaps(phrase: tuple[str, ...], chosen: list[tuple[str, ...]]) -> bool:
    return any(set(phrase) & set(other) for other in chosen)


def expand_offline(topic: str, depth: str, texts: list[str]) -> dict[str, Any]:
    """Subtopics, keywords and queries for ``topic`` mined from ``texts`` (may be empty)."""
    n_sub, n_kw, n_q = COUNTS[depth]
    texts = list(dict.fromkeys(texts))  # an article in two feeds is one document
    topic_terms = tuple(tokens(topic)) or tuple(topic.lower().split())
    docs = [tokens(text) for text in texts]
    relevant = _on_topic(topic_terms, docs)
    phrases_of = [candidate_phrases(texts[i]) for i in range(len(texts))]
    df_all = Counter(p for phrases in phrases_of for p in set(phrases))
    df_rel = Counter(p for i in relevant for p in set(phrases_of[i]))
    seen = Counter(p for i in relevant for p in phrases_of[i])
    total = len(texts)
    topic_set = set(topic_terms)

    def score(phrase: tuple[str, ...]) -> float:
        """Documents (and repeats) on the topic, rare elsewhere; longer phrases say more."""
        rarity = max(math.log((total + 1) / (df_all[phrase] + 0.5)), 0.1)
        weight = (df_rel[phrase] + 0.5 * (seen[phrase] - df_rel[phrase])) * rarity
        weight *= 1 + 0.5 * (len(phrase) - 1)
        return weight * (0.5 if set(phrase) & topic_set else 1.0)

    # A multi-word candidate counts only if it recurs: verb-crossing runs rarely do.
    ranked = sorted(
        (
            p
            for p in df_rel
            if not set(p) <= topic_set and not _generic(p) and (len(p) == 1 or seen[p] >= 2)
        ),
        key=lambda p: (-score(p), p),
    )
    forms = surface_forms(texts[i] for i in relevant)
    chosen: list[tuple[str, ...]] = []
    for phrase in ranked:
        if len(chosen) >= max(1, n_sub - 1):  # keep room for at least one facet
            break
        if len(phrase) >= 2 and not _overlaps(phrase, chosen):
            chosen.append(phrase)
    subtopics = [forms.get(p, " ".join(p)) for p in chosen]
    for facet in _facets(topic, [docs[i] for i in relevant]):
        if len(subtopics) >= n_sub:
            break
        subtopics.append(facet)
    keywords = [topic.lower()]
    taken: list[tuple[str, ...]] = []
    for phrase in ranked:
        if len(keywords) >= n_kw:
            break
        if len(phrase) == 1 and any(phrase[0] in other for other in taken):
            continue  # "brew" says nothing "cold brew" did not
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
    candidates += [f"{topic} news", f"{topic} market trends", f"{topic} industry analysis"]
    return _dedupe(candidates)[:count]


@lru_cache(maxsize=4)
def corpus_texts(root: Path = CORPUS_DIR) -> tuple[str, ...]:
    """Entry texts of the feeds (RSS/Atom) shipped under ``root``, if any.

    The sites' HTML pages are left out: they repeat the feed headlines next to navigation
    and site names, which would pass for recurring phrases.
    """
    import feedparser

    if not root.is_dir():
        return ()
    texts: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in {".xml", ".rss", ".atom"}:
            parsed = feedparser.parse(path.read_bytes())
            texts.extend(
                article_text({"title": e.get("title"), "summary": e.get("summary")})
                for e in parsed.entries
            )
    return tuple(t for t in texts if t)


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
        texts = [article_text(a) for a in articles_in(inputs)] or list(corpus_texts())
        ctx.progress(40, f"mining {len(texts)} texts for phrases about {topic!r}")
        output = expand_offline(topic, depth, texts)
        if note:
            output["note"] = note
    ctx.progress(100, f"{len(output['subtopics'])} subtopics, {len(output['keywords'])} keywords")
    return StageResult(output=output, items_processed=len(output["keywords"]))

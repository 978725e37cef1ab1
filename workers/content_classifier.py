"""``content_classifier.classify``: how relevant each article is to the topic, and to which
subtopic it belongs.

Offline it uses scikit-learn's TF-IDF (nothing downloaded): one vectorizer fitted on every
upstream article (not only this shard's, so every shard scores on the same scale) plus a
query document made of the topic, its keywords and subtopics. Relevance blends the cosine
similarity to that query with how much of the topic itself the article names; the best
subtopic is the one whose phrase (and market-research cue words) the article is closest to.
With an LLM configured, articles are scored in batches by the model, each batch validated
and any article it leaves out scored offline.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from sklearn.metrics.pairwise import linear_kernel

from orchestrator.errors import ValidationFailed
from orchestrator.sdk import StageContext, StageResult, WorkerType
from workers.lib.contract import articles_in, field_in, shard_of
from workers.lib.llm import LLMClient, ask_json
from workers.lib.text import FACETS, acronym, article_text, coverage, plain, tokens, vectorizer

log = logging.getLogger(__name__)

content_classifier = WorkerType(
    "content_classifier",
    display_name="Content classifier",
    capabilities=["relevance-scoring", "subtopic-labelling", "tfidf", "sharded", "llm-optional"],
    requirements={"optional_resources": ["openai_api"]},
)

#: Relevance at or above this labels an article "relevant".
THRESHOLD = 0.5
#: Relevance at or above this (and below THRESHOLD) labels it "related".
RELATED = 0.25
#: Cosine similarity to the query at which the similarity part of relevance reaches ~63%.
SIMILARITY_SCALE = 0.12
#: Share of relevance that comes from naming the topic itself (the rest: similarity).
NAMED_WEIGHT = 0.4
#: Pseudo-relevance feedback: how many top articles, and how much their centroid weighs.
FEEDBACK_DOCS = 8
FEEDBACK_WEIGHT = 0.75
#: Articles per LLM request.
BATCH = 8


def label_of(relevance: float, threshold: float = THRESHOLD) -> str:
    """``relevant``, ``related`` or ``off_topic``, by fixed cut-offs on relevance."""
    if relevance >= threshold:
        return "relevant"
    return "related" if relevance >= threshold * RELATED / THRESHOLD else "off_topic"


def _subtopic_text(subtopic: str, topic_terms: set[str]) -> str:
    """A subtopic without the topic's own words (they match every article), plus the cue
    words when it is a market-research facet such as "<topic> pricing and costs"."""
    own = " ".join(w for w in subtopic.split() if not set(tokens(w)) <= topic_terms)
    for facet, cues in FACETS.items():
        if subtopic.lower().endswith(facet):
            own = f"{own} {' '.join(cues)}"
    return own.strip() or subtopic


def _with_feedback(matrix: Any, query: np.ndarray, named: np.ndarray) -> np.ndarray:
    """Cosine similarity to the query after one round of pseudo-relevance feedback (Rocchio):
    the query grows by the centroid of the best articles that name the whole topic, so that
    an article about "megawatt charging for trucks" is found for "electric vehicles"."""
    similarity = (matrix @ query.T).ravel()
    order = np.argsort(-similarity, kind="stable")
    seeds = [i for i in order if named[i] == 1.0 and similarity[i] > 0][:FEEDBACK_DOCS]
    if not seeds:
        return similarity
    expanded = query + FEEDBACK_WEIGHT * np.asarray(matrix[seeds].mean(axis=0))
    return (matrix @ (expanded / np.linalg.norm(expanded)).T).ravel()


def score_tfidf(
    articles: list[dict[str, Any]], topic: str, keywords: list[str], subtopics: list[str]
) -> list[tuple[float, str | None]]:
    """(relevance 0..1, best subtopic or None) for every article, on one shared scale."""
    if not articles:
        return []
    texts = [article_text(a) for a in articles]
    topic_terms = tokens(topic)
    query = " ".join([topic, topic, topic, acronym(topic_terms), *keywords, *subtopics])
    sub_texts = [_subtopic_text(s, set(topic_terms)) for s in subtopics]
    model = vectorizer(ngrams=2).fit([*texts, query, *sub_texts])
    matrix = model.transform(texts)
    named = np.array([coverage(topic_terms, set(tokens(text))) for text in texts])
    similarity = _with_feedback(matrix, model.transform([query]).toarray(), named)
    by_subtopic = (
        linear_kernel(matrix, model.transform(sub_texts))
        if subtopics
        else np.zeros((len(texts), 0))
    )
    scored: list[tuple[float, str | None]] = []
    for i in range(len(texts)):
        relevance = (1 - NAMED_WEIGHT) * (1 - math.exp(-similarity[i] / SIMILARITY_SCALE))
        relevance += NAMED_WEIGHT * named[i]
        best: str | None = None
        if subtopics and by_subtopic[i].max() > 0:
            best = subtopics[int(by_subtopic[i].argmax())]
        scored.append((round(float(relevance), 4), best))
    return scored


def _llm_batch(
    ctx: StageContext,
    client: LLMClient,
    batch: list[dict[str, Any]],
    topic: str,
    subtopics: list[str],
) -> dict[int, tuple[float, str | None]]:
    """The model's (relevance, subtopic) for the batch positions it answered validly."""
    listing = "\n".join(
        f"[{n}] {plain(a.get('title'))}: {plain(a.get('summary'))[:400]}"
        for n, a in enumerate(batch)
    )
    reply = ask_json(
        ctx,
        client,
        [
            {
                "role": "system",
                "content": "You rate news articles for a market-research team. "
                "Answer with one JSON object only.",
            },
            {
                "role": "user",
                "content": (
                    f"Topic: {topic}\nSubtopics: {', '.join(subtopics) or '(none)'}\n\n"
                    f"Articles:\n{listing}\n\nFor every article return "
                    '{"results": [{"index": n, "relevance": 0.0-1.0, "subtopic": '
                    "one of the subtopics or null}]}, relevance being how useful the article "
                    "is for researching the topic."
                ),
            },
        ],
        max_tokens=60 + 40 * len(batch),
        temperature=0.0,
    )
    results = reply.get("results") if reply else None
    answered: dict[int, tuple[float, str | None]] = {}
    for item in results if isinstance(results, list) else []:
        if not isinstance(item, dict):
            continue
        index, relevance = item.get("index"), item.get("relevance")
        if not isinstance(index, int) or not 0 <= index < len(batch):
            continue
        if isinstance(relevance, bool) or not isinstance(relevance, int | float):
            continue
        subtopic = item.get("subtopic")
        answered[index] = (
            round(min(1.0, max(0.0, float(relevance))), 4),
            subtopic if subtopic in subtopics else None,
        )
    return answered


@content_classifier.action("classify")
def classify(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> StageResult:
    """Score and label this shard's articles against the topic, keywords and subtopics."""
    topic = plain(params.get("topic") or field_in(inputs, "topic", ""))
    if not topic:
        raise ValidationFailed("content_classifier.classify needs a 'topic' (param or input)")
    threshold = float(params.get("threshold", THRESHOLD))
    if not 0 < threshold <= 1:
        raise ValidationFailed(f"threshold must be in (0, 1], not {threshold}")
    keywords = [str(k) for k in field_in(inputs, "keywords", [])]
    subtopics = [str(s) for s in field_in(inputs, "subtopics", [])]
    everything = articles_in(inputs)
    mine = shard_of(everything, params)
    ctx.progress(5, f"classifying {len(mine)} of {len(everything)} articles")
    # Fitted on every article so that all shards score on one scale.
    offline = dict(
        zip(
            (a["id"] for a in everything),
            score_tfidf(everything, topic, keywords, subtopics),
            strict=True,
        )
    )
    scores = {a["id"]: offline[a["id"]] for a in mine}
    method = "tfidf"
    client = LLMClient.from_settings(ctx.settings) if mine else None
    if client is not None:
        with client:
            answered = 0
            for start in range(0, len(mine), BATCH):
                batch = mine[start : start + BATCH]
                for index, score in _llm_batch(ctx, client, batch, topic, subtopics).items():
                    scores[batch[index]["id"]] = score
                    answered += 1
                done = min(len(mine), start + BATCH)
                ctx.progress(10 + 85 * done / len(mine), f"LLM scored {done} of {len(mine)}")
        if answered:
            method = "llm"
        else:
            log.warning("the LLM scored no article validly; kept the TF-IDF scores")
    articles = []
    for article in mine:
        relevance, subtopic = scores[article["id"]]
        label = label_of(relevance, threshold)
        articles.append(
            {
                **article,
                "relevance": relevance,
                "label": label,
                "subtopic": subtopic if label != "off_topic" else None,
            }
        )
    relevant = sum(1 for a in articles if a["label"] == "relevant")
    ctx.progress(100, f"{relevant} of {len(articles)} articles relevant")
    output = {"articles": articles, "method": method, "threshold": threshold}
    return StageResult(output=output, items_processed=len(articles))

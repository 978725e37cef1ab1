"""``universal_researcher.research``: answer a question from whatever articles came upstream.

Offline the answer is an extractive summary: the sentences of the most relevant articles
are ranked by TF-IDF similarity to the question (and the topic's keywords, when an upstream
stage produced them), weighted by their article's relevance, and picked by maximal marginal
relevance so that the findings do not repeat each other; each finding keeps its source and
link. With an LLM configured the model writes the answer from numbered excerpts and cites
them; its findings are mapped back to their sources, and a reply that cites nothing usable
falls back to the extractive method.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.metrics.pairwise import linear_kernel

from orchestrator.errors import ValidationFailed
from orchestrator.sdk import StageContext, StageResult, WorkerType
from workers.lib.contract import articles_in, depth_of, field_in, relevance_of
from workers.lib.llm import LLMClient, ask_json
from workers.lib.text import plain, sentences, string_list, tokens, vectorizer

log = logging.getLogger(__name__)

universal_researcher = WorkerType(
    "universal_researcher",
    display_name="Universal researcher",
    capabilities=["question-answering", "extractive-summary", "source-citation", "llm-optional"],
    requirements={"optional_resources": ["openai_api"]},
)

#: Findings per depth.
FINDINGS = {"quick": 3, "standard": 5, "comprehensive": 8}
#: Maximal marginal relevance trade-off: 1.0 is pure relevance, 0.0 pure novelty.
MMR_LAMBDA = 0.7
#: Share of a sentence's score that comes from the question (the rest: the topic keywords).
QUESTION_WEIGHT = 0.8
#: At most this many findings from one article.
PER_ARTICLE = 2
#: Excerpts shown to the LLM.
LLM_EXCERPTS = 24


def pool(articles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The articles worth reading, most relevant first: labelled relevant, else related, else
    all but off-topic, else everything (an unclassified input has no labels)."""
    for wanted in ({"relevant"}, {"relevant", "related"}):
        chosen = [a for a in articles if a.get("label") in wanted]
        if chosen:
            break
    else:
        chosen = [a for a in articles if a.get("label") != "off_topic"] or articles
    return sorted(chosen, key=lambda a: -relevance_of(a))


def excerpts(articles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every sentence of the title and summary, with the article it came from."""
    found = []
    for n, article in enumerate(articles):
        title, summary = plain(article.get("title")), plain(article.get("summary"))
        for sentence in sentences(summary) or ([title] if title else []):
            if len(tokens(sentence)) >= 3:
                found.append({"text": sentence, "article": n, "title": title})
    return found


def extract(
    question: str, keywords: list[str], articles: list[dict[str, Any]], count: int
) -> list[dict[str, Any]]:
    """The ``count`` best, mutually different sentences, as findings with their sources."""
    candidates = excerpts(articles)
    if not candidates:
        return []
    # A sentence is read in the context of its headline: "It rose 35%" names nothing alone.
    texts = [f"{c['title']} {c['text']}" for c in candidates]
    topic = " ".join(keywords) or question
    model = vectorizer(ngrams=2).fit([*texts, question, topic])
    matrix = model.transform(texts)
    # The question steers; the topic's keywords only break ties between equally apt sentences.
    asked, about = linear_kernel(matrix, model.transform([question, topic])).T
    weight = np.array(
        [0.5 + 0.5 * float(articles[c["article"]].get("relevance") or 0.5) for c in candidates]
    )
    relevance = (QUESTION_WEIGHT * asked + (1 - QUESTION_WEIGHT) * about) * weight
    overlap = linear_kernel(matrix)
    picked: list[int] = []
    per_article: dict[int, int] = {}
    while len(picked) < min(count, len(candidates)):
        best, best_score = -1, -np.inf
        for i in range(len(candidates)):
            if i in picked or per_article.get(candidates[i]["article"], 0) >= PER_ARTICLE:
                continue
            redundancy = max((overlap[i, j] for j in picked), default=0.0)
            score = MMR_LAMBDA * relevance[i] - (1 - MMR_LAMBDA) * redundancy
            if score > best_score:
                best, best_score = i, score
        if best < 0:
            break
        picked.append(best)
        per_article[candidates[best]["article"]] = (
            per_article.get(candidates[best]["article"], 0) + 1
        )
    return [_finding(candidates[i]["text"], articles[candidates[i]["article"]]) for i in picked]


def _finding(text: str, article: dict[str, Any]) -> dict[str, Any]:
    return {
        "text": text,
        "source": article.get("source") or article.get("title") or "",
        "link": article.get("link") or "",
    }


def summarise(findings: list[dict[str, Any]], articles: list[dict[str, Any]]) -> str:
    """An extractive answer: what was read, then the three strongest findings."""
    if not findings:
        return "No article in the inputs addressed the question."
    sources = sorted({str(a.get("source") or "") for a in articles} - {""})
    read = f"From {len(articles)} article(s)" + (
        f" across {len(sources)} source(s)" if sources else ""
    )
    return f"{read}: " + " ".join(f["text"] for f in findings[:3])


def research_with_llm(
    ctx: StageContext,
    client: LLMClient,
    question: str,
    articles: list[dict[str, Any]],
    count: int,
) -> dict[str, Any] | None:
    """The model's answer and findings from numbered excerpts; None when unusable."""
    shown = extract(question, [], articles, LLM_EXCERPTS)
    if not shown:
        return None
    listing = "\n".join(f"[{n}] ({f['source']}) {f['text']}" for n, f in enumerate(shown))
    reply = ask_json(
        ctx,
        client,
        [
            {
                "role": "system",
                "content": "You are a careful research analyst. Use only the excerpts given. "
                "Answer with one JSON object only.",
            },
            {
                "role": "user",
                "content": (
                    f"Question: {question}\n\nExcerpts:\n{listing}\n\nReturn "
                    '{"answer": "a short paragraph", "findings": [{"text": "one finding", '
                    f'"excerpt": n}}]}} with at most {count} findings, each citing the '
                    "excerpt number it rests on."
                ),
            },
        ],
        max_tokens=250 + 80 * count,
    )
    answer = plain(reply.get("answer")) if reply else ""
    findings = []
    for item in (reply or {}).get("findings") or []:
        if not isinstance(item, dict):
            continue
        text, n = string_list([item.get("text")], limit=1), item.get("excerpt")
        if text and isinstance(n, int) and 0 <= n < len(shown):
            findings.append({**shown[n], "text": text[0]})
    if not answer or not findings:
        log.warning("LLM research reply had no answer or no cited finding")
        return None
    return {"question": question, "answer": answer, "findings": findings[:count], "method": "llm"}


@universal_researcher.action("research")
def research(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> StageResult:
    """Answer ``question`` from the upstream articles, citing a source for every finding."""
    topic = plain(field_in(inputs, "topic", ""))
    question = plain(params.get("question")) or (
        f"What are the main developments in {topic}?" if topic else ""
    )
    if not question:
        raise ValidationFailed("universal_researcher.research needs a 'question'")
    count = FINDINGS[depth_of(params)]
    articles = pool(articles_in(inputs))
    keywords = [str(k) for k in field_in(inputs, "keywords", [])]
    ctx.progress(10, f"reading {len(articles)} articles")
    output: dict[str, Any] | None = None
    note = ""
    client = LLMClient.from_settings(ctx.settings) if articles else None
    if client is not None:
        with client:
            ctx.progress(30, "asking the LLM")
            output = research_with_llm(ctx, client, question, articles, count)
        if output is None:
            note = "the LLM reply was not the JSON asked for; used the extractive method"
    if output is None:
        ctx.progress(50, "ranking sentences")
        findings = extract(question, keywords, articles, count)
        output = {
            "question": question,
            "answer": summarise(findings, articles),
            "findings": findings,
            "method": "extractive",
        }
        if note:
            output["note"] = note
    ctx.progress(100, f"{len(output['findings'])} findings")
    return StageResult(output=output, items_processed=len(output["findings"]))

"""Text processing shared by the research workers: tokens, sentences, phrases, TF-IDF.

The data-contract plumbing (inputs by field name, shards, depth, ids) is in
``workers.lib.contract``. Everything here is offline and deterministic; nothing is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

from workers.lib.feeds import plain_text


def _vocabulary(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Words that carry no topic in news text, beyond scikit-learn's English stop words.
NEWS_STOP_WORDS = _vocabulary(
    """
    said says say told according announced announces reported reports report week weeks
    today yesterday tomorrow year years month months day days time times new news also
    just like including use used using make makes made way ways lot lots percent per cent
    according mr ms dr inc ltd co corp company companies people thing things first last
    next many much more most less least several number numbers part according via amid
    says said will would could should may might must can need needs get gets got one two
    three four five six seven eight nine ten ago early late latest recent recently
    better best big bigger biggest high higher highest low lower large larger largest small
    smaller good great major key main top away cheaper faster fast slow slower hundreds
    thousands millions billions dozens still really even already instead adding
    dollar dollars euro euros pound pounds january february march april june july august
    september october november december monday tuesday wednesday thursday friday saturday
    sunday via read means did does doing
    """
)
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) | NEWS_STOP_WORDS
#: Verbs common in headlines that are rarely nouns: they end a noun phrase (no tagger here).
VERBS = _vocabulary(
    """
    expect expects expected promise promises overtook overtake overtakes expand expands
    threaten threatens climb climbs target targets keep keeps kept plans unveil unveils
    launch launches bets drives races builds give gives gave warn warns buys sell sells pay
    pays covers controls build growing uses helps opens adds reach reaches grow grows grew rethink
    rethinks replace replaces deliver delivers complain complained hoping hope hopes cut
    cuts rose rise rises fell falls hit hits leads become becomes remain remains show shows
    want wants see sees seen take takes took bring brings brought win wins won lose loses
    lost boost boosts slash slashes soar soars surge surges jump jumps drop drops dip dips
    dipped ended ends face faces join joins plan tests link links put puts raise raises
    enter enters fit fits arrive arrives publish publishes improve improves differ differs
    widen widens stabilise stabilises stabilize stabilizes double doubles spread spreads
    require requires compare compares offer offers move moves start starts struggle
    struggles shift shifts slows hold holds meet meets turn turns allow allows let lets
    """
)

#: Market-research facets and the cue words that show a text discusses them.
FACETS: dict[str, tuple[str, ...]] = {
    "market size and growth": ("market", "growth", "sale", "demand", "share", "revenue"),
    "key players and competition": ("rival", "competitor", "leader", "startup", "brand"),
    "pricing and costs": ("price", "cost", "cheap", "expensive", "afford", "tariff"),
    "technology and innovation": ("technology", "research", "breakthrough", "patent", "lab"),
    "regulation and policy": ("regulation", "policy", "law", "government", "subsidy", "rule"),
    "supply chain": ("supply", "shortage", "supplier", "production", "factory", "import"),
    "investment and funding": ("investment", "funding", "investor", "billion", "venture"),
    "consumer adoption": ("consumer", "customer", "buyer", "adoption", "owner", "user"),
    "sustainability": ("climate", "emission", "sustainable", "carbon", "environmental"),
    "risks and challenges": ("risk", "challenge", "problem", "concern", "barrier", "delay"),
}

_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")  # letters of any alphabet: "café"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_CLAUSE_BREAK = re.compile('[.,;:!?()\\[\\]{}"\u201c\u201d\u2018\u2019\u2014\u2013|/]+|\\s-\\s')


def plain(text: Any) -> str:
    """Text without HTML tags, entities or runs of whitespace (any length)."""
    return plain_text(str(text), limit=None) if text else ""


def stem(word: str) -> str:
    """A light plural stemmer (Porter's step 1a): enough to match ``vehicle`` with ``vehicles``."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """Lowercase word tokens, hyphenated words kept whole, possessives dropped."""
    return [w.removesuffix("'s") for w in _WORD.findall(text.lower())]


def tokens(text: str) -> list[str]:
    """Stemmed content tokens: the analyzer every TF-IDF here uses."""
    return [stem(w) for w in words(text) if w not in STOP_WORDS and not w.isdigit() and len(w) > 1]


def acronym(topic_terms: list[str] | tuple[str, ...]) -> str:
    """ "ev" for "electric vehicles"; nothing for a one-word topic."""
    return "".join(t[0] for t in topic_terms) if len(topic_terms) > 1 else ""


def coverage(topic_terms: list[str] | tuple[str, ...], present: set[str]) -> float:
    """How much of the topic a text names (0..1); its acronym ("ev", "evs") counts as all."""
    wanted = set(topic_terms)
    if not wanted:
        return 0.0
    short = acronym(topic_terms)
    if short and (short in present or short + "s" in present):
        return 1.0
    return len(wanted & present) / len(wanted)


def sentences(text: str) -> list[str]:
    """Sentences of plain text, split on terminal punctuation followed by a capital."""
    return [s.strip() for s in _SENTENCE_END.split(plain(text)) if s.strip()]


def vectorizer(*, ngrams: int = 2, max_df: float = 1.0) -> TfidfVectorizer:
    """A TF-IDF vectorizer over ``tokens`` (stop words out, light stemming, sublinear tf)."""
    return TfidfVectorizer(
        tokenizer=tokens,
        lowercase=False,
        token_pattern=None,
        ngram_range=(1, ngrams),
        sublinear_tf=True,
        max_df=max_df,
    )


_BREAKS = STOP_WORDS | VERBS


def _wordlike(word: str) -> bool:
    """Words, not figures: "000-euro" and "2025" are no phrase."""
    return len(word) > 1 and not any(ch.isdigit() for ch in word)


def _past_tense(word: str) -> bool:
    return len(word) > 4 and word.endswith("ed") and not word.endswith("eed")


def candidate_phrases(text: str, *, longest: int = 3) -> list[tuple[str, ...]]:
    """Noun-phrase-like candidates (RAKE): runs of content words between stop words and
    punctuation, as stemmed n-grams up to ``longest`` words. Runs ending in a past-tense
    verb or an adverb are trimmed, a cheap stand-in for a part-of-speech tagger."""
    found: list[tuple[str, ...]] = []
    for clause in _CLAUSE_BREAK.split(text.lower()):
        run: list[str] = []
        for word in [*words(clause), ""]:
            if word and word not in _BREAKS and _wordlike(word):
                run.append(word)
                continue
            while run and (_past_tense(run[-1]) or run[-1].endswith("ly")):
                run.pop()
            while run and run[0].endswith("ly"):
                run.pop(0)
            stems = [stem(w) for w in run]
            found.extend((s,) for s, w in zip(stems, run, strict=True) if not _past_tense(w))
            for size in range(2, min(longest, len(stems)) + 1):
                found.extend(tuple(stems[i : i + size]) for i in range(len(stems) - size + 1))
            run = []
    return found


def surface_forms(texts: Iterable[str]) -> dict[tuple[str, ...], str]:
    """The most frequent way each stemmed n-gram (up to three words) is written."""
    counts: dict[tuple[str, ...], dict[str, int]] = {}
    for text in texts:
        run = [w for w in words(text) if w not in STOP_WORDS and not w.isdigit()]
        for size in (1, 2, 3):
            for i in range(len(run) - size + 1):
                written = " ".join(run[i : i + size])
                key = tuple(stem(w) for w in run[i : i + size])
                forms = counts.setdefault(key, {})
                forms[written] = forms.get(written, 0) + 1
    return {key: max(forms, key=lambda f: (forms[f], f)) for key, forms in counts.items()}


def article_text(article: dict[str, Any]) -> str:
    """Title and summary as one plain text."""
    title, summary = plain(article.get("title")), plain(article.get("summary"))
    if title and summary:
        return f"{title}. {summary}" if title[-1] not in ".!?" else f"{title} {summary}"
    return title or summary


def string_list(value: Any, *, limit: int) -> list[str] | None:
    """A model's list of strings, cleaned and deduplicated; None when it is not one."""
    if not isinstance(value, list):
        return None
    cleaned: list[str] = []
    for item in value:
        if not isinstance(item, str):
            return None
        text = plain(item)[:200]
        if text and text.lower() not in {c.lower() for c in cleaned}:
            cleaned.append(text)
    return cleaned[:limit] or None

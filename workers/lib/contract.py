"""The market-research data contract, shared by every worker: one implementation of each rule.

Workers find what they need by FIELD NAME across all inputs (never by stage id, so that they
compose in any template), take their shard's slice ``items[shard::shards]`` and read ``depth``
the same way. Light on purpose (no scikit-learn): the feed workers import it too.
"""

from __future__ import annotations

import hashlib
from typing import Any

from orchestrator.errors import ValidationFailed

DEPTHS = ("quick", "standard", "comprehensive")


def depth_of(params: dict[str, Any]) -> str:
    """``params["depth"]``, validated; ``standard`` when absent."""
    depth = str(params.get("depth") or "standard").strip().lower()
    if depth not in DEPTHS:
        raise ValidationFailed(f"depth must be one of {', '.join(DEPTHS)}, not {depth!r}")
    return depth


def outputs(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The upstream outputs that are dicts, in stage id order (stable across shards)."""
    return [inputs[name] for name in sorted(inputs) if isinstance(inputs[name], dict)]


def field_in(inputs: dict[str, Any], name: str, default: Any = None) -> Any:
    """The first upstream output (in stage id order) with a non-empty field ``name``."""
    for output in outputs(inputs):
        if output.get(name) not in (None, "", []):
            return output[name]
    return default


def stable_id(basis: str) -> str:
    """A short, stable hash: an article's id from its link (or guid)."""
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


def article_id(article: dict[str, Any]) -> str:
    """An article's id, or a stable hash of its link or title when the producer gave none."""
    if article.get("id"):
        return str(article["id"])
    basis = article.get("link") or article.get("title") or repr(sorted(article.items()))
    return stable_id(str(basis))


def relevance_of(article: dict[str, Any]) -> float:
    """An article's ``relevance`` as a float (0 when absent or not a number)."""
    try:
        return float(article.get("relevance") or 0.0)
    except (TypeError, ValueError):
        return 0.0


def _rank(article: dict[str, Any]) -> tuple[bool, float]:
    """Which copy of an article to keep: a classified one (with a label), then the most relevant."""
    return bool(article.get("label")), relevance_of(article)


def articles_in(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every upstream ``articles`` list concatenated, one per id (the first seen keeps its
    place); a classified copy wins over a raw fetched one, and the more relevant of two."""
    kept: dict[str, dict[str, Any]] = {}
    for output in outputs(inputs):
        for article in output.get("articles") or []:
            if not isinstance(article, dict):
                continue
            key = article_id(article)
            if key not in kept or _rank(article) > _rank(kept[key]):
                kept[key] = {**article, "id": key}
    return list(kept.values())


def shard_of(items: list[Any], params: dict[str, Any]) -> list[Any]:
    """This shard's slice ``items[shard::shards]``; everything when not sharded."""
    shards = int(params.get("shards") or 1)
    shard = int(params.get("shard") or 0)
    if shards < 1 or not 0 <= shard < shards:
        raise ValidationFailed(f"shard {shard} of {shards} is not a valid shard")
    return items[shard::shards]

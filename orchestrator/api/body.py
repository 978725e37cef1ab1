"""Request bodies: parsed once, after the key is checked, within bounds.

``json.loads`` recurses once per level, so 2,000 nested brackets end in a ``RecursionError``;
the depth is counted on the raw bytes first. NaN and infinite numbers are JSON that Python
accepts and nothing else does (an estimate carrying one is invalid JSON), and a lone
surrogate (``"\\ud800"``) parses but cannot be stored or rendered: both are refused here,
before any view sees them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from orchestrator.core.templates import MAX_DEPTH, check_tree
from orchestrator.errors import BadRequest, ValidationFailed

#: A JSON string, escapes included (the unrolled form: no backtracking on long strings).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_depth(raw: bytes) -> int:
    """How deep the brackets of ``raw`` nest, strings left out; no parsing."""
    depth = deepest = 0
    for byte in _STRING.sub(b"", raw).translate(None, _NOT_BRACKET):
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> float:
    raise ValidationFailed(f"body: {name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if value in {float("inf"), float("-inf")}:
        raise ValidationFailed(f"body: {text[:40]} is too large for a number")
    return value


def parse_json(raw: bytes) -> Any:
    """The body's JSON value: 400 when it is not JSON or nests too deep, 422 when it holds
    what cannot be stored."""
    if nesting_depth(raw) > MAX_DEPTH:
        raise BadRequest(f"malformed JSON body: nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None
    check_tree("body", value)
    return value

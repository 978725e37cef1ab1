"""Quantiles of one quantity (a stage's time, its items, its units of a resource) from what is
known before a run, learned from what earlier runs did.

A ridge regression on the logarithm (times and units are positive and skewed), whose
interval comes from its cross-validated residuals (split conformal: the residuals of rows
each fold did not see say how wrong a prediction is on new data). Few rows make an empirical
model (the same, without features); the interval widens for few rows and for a category never
seen. A model is plain numbers, kept as JSON (no pickle between processes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Rows below which no model is fitted (the caller falls back to the template's hints).
MIN_ROWS = 1
#: Rows from which features are used (below: the empirical model of the target alone).
MIN_ROWS_FOR_FEATURES = 8
#: Strength of the ridge penalty on standardised features.
RIDGE_ALPHA = 1.0
#: Quantile levels of the stated interval (an 80% interval) and its middle.
LOW, MID, HIGH = 0.1, 0.5, 0.9
#: A category never seen in training: the interval is this much wider (on the log scale).
NOVELTY_WIDENING = 2.0
#: The narrowest half-interval on the log scale with one row (a factor of 4 either way);
#: it shrinks with the square root of the rows, so identical samples still get a spread.
PRIOR_SPREAD = math.log(4.0)
_Z90 = 1.2815515655446004


@dataclass(frozen=True)
class Quantiles:
    p10: float
    p50: float
    p90: float

    def scaled(self, factor: float) -> Quantiles:
        return Quantiles(self.p10 * factor, self.p50 * factor, self.p90 * factor)

    def as_dict(self, digits: int = 0) -> dict[str, float]:
        def r(v: float) -> float:
            return round(v, digits) if digits else float(round(v))

        return {"p10": r(self.p10), "p50": r(self.p50), "p90": r(self.p90)}


@dataclass(frozen=True)
class Model:
    """``log1p(target) ~ intercept + coef . standardised(features)``, plus the residuals."""

    names: list[str]
    means: list[float]
    scales: list[float]
    coef: list[float]
    intercept: float
    #: Cross-validated residuals on the log scale, sorted.
    residuals: list[float]
    rows: int
    #: Feature names that are categories (``key=value``): one unseen at prediction widens.
    categories: list[str] = field(default_factory=list)

    # -- prediction --------------------------------------------------------------------------

    def center(self, features: Mapping[str, float]) -> tuple[float, float]:
        """The log-scale prediction and how much to widen its spread (1: not at all)."""
        x = np.array([_number(features.get(n)) for n in self.names], dtype=float)
        z = (x - np.array(self.means)) / np.array(self.scales) if self.names else x
        center = self.intercept + float(np.dot(self.coef, z)) if self.names else self.intercept
        widen = 1.0 + 2.0 / math.sqrt(self.rows)  # few rows: their residuals understate
        keys = {name.split("=", 1)[0] for name in self.categories}
        if any(
            "=" in f and f.split("=", 1)[0] in keys and f not in self.categories
            for f, v in features.items()
            if v
        ):
            widen *= NOVELTY_WIDENING
        return center, widen

    def quantiles(self, features: Mapping[str, float]) -> Quantiles:
        center, widen = self.center(features)
        res = np.array(self.residuals)
        lo, mid, hi = (float(np.quantile(res, q)) for q in _conformal_levels(len(res)))
        floor = self.floor()
        return Quantiles(
            _back(center + mid + min(lo - mid, -floor) * widen),
            _back(center + mid),
            _back(center + mid + max(hi - mid, floor) * widen),
        )

    def floor(self) -> float:
        return PRIOR_SPREAD / math.sqrt(self.rows)

    def draw(self, features: Mapping[str, float], rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` plausible values (for Monte Carlo over a DAG): residuals drawn with
        replacement, spread as ``quantiles`` spreads them."""
        center, widen = self.center(features)
        res = np.array(self.residuals)
        mid = float(np.median(res))
        picked = rng.choice(res, size=n)
        prior = rng.normal(0.0, self.floor() / _Z90, n)  # the spread few rows cannot show
        return np.maximum(0.0, np.expm1(center + mid + (picked - mid + prior) * widen))

    # -- storage -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Model:
        return cls(**data)


def fit(rows: Sequence[tuple[Mapping[str, float], float]]) -> Model | None:
    """A model of ``target`` from ``(features, target)`` rows (targets ≥ 0); None if too few."""
    if len(rows) < MIN_ROWS:
        return None
    y = np.log1p(np.maximum(0.0, np.array([float(t) for _, t in rows])))
    names = sorted({k for f, _ in rows for k, v in f.items() if _finite(v)})
    x = np.array([[_number(f.get(n)) for n in names] for f, _ in rows], dtype=float)
    categories = [n for n in names if "=" in n]  # seen, even where they never vary
    varying = [i for i in range(len(names)) if np.ptp(x[:, i]) > 0] if len(rows) else []
    if len(rows) < MIN_ROWS_FOR_FEATURES or not varying:
        return _empirical(y, categories)
    names = [names[i] for i in varying]
    x = x[:, varying]
    means, scales = x.mean(axis=0), x.std(axis=0)
    scales[scales == 0] = 1.0
    z = (x - means) / scales
    residuals = _cross_validated_residuals(z, y)
    coef, intercept = _ridge(z, y)
    return Model(
        names=names,
        means=means.tolist(),
        scales=scales.tolist(),
        coef=coef.tolist(),
        intercept=intercept,
        residuals=sorted(residuals.tolist()),
        rows=len(rows),
        categories=categories,
    )


def _empirical(y: np.ndarray, categories: list[str]) -> Model:
    mean = float(y.mean())
    return Model([], [], [], [], mean, sorted((y - mean).tolist()), len(y), categories)


def _ridge(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import Ridge

    model = Ridge(alpha=RIDGE_ALPHA).fit(z, y)
    return np.asarray(model.coef_, dtype=float), float(model.intercept_)


def _cross_validated_residuals(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Residuals of each row predicted by a model fitted without it (at most 5 folds)."""
    from sklearn.model_selection import KFold

    residuals = np.empty_like(y)
    folds = KFold(n_splits=min(5, len(y)), shuffle=True, random_state=0)
    for train, test in folds.split(z):
        coef, intercept = _ridge(z[train], y[train])
        residuals[test] = y[test] - (intercept + z[test] @ coef)
    return residuals


def _conformal_levels(n: int) -> tuple[float, float, float]:
    """The residual quantile levels that give an 80% interval on new data with ``n`` rows:
    split-conformal's finite-sample correction, clipped to what the rows can say."""
    spread = min(0.5, (HIGH - LOW) / 2 * (n + 1) / n)
    return max(0.0, MID - spread), MID, min(1.0, MID + spread)


def _back(log_value: float) -> float:
    return max(0.0, math.expm1(min(log_value, 50.0)))


def _number(value: Any) -> float:
    return float(value) if _finite(value) else 0.0


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# -- features ----------------------------------------------------------------------------------

#: Strings up to this long without spaces are categories (``depth=quick``); others count by
#: length only (a topic, a question).
CATEGORY_MAX_LEN = 24


def param_features(params: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """A stage's bound params as numbers: values, booleans, categories, lengths."""
    out: dict[str, float] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, int | float):
            if math.isfinite(value):
                out[name] = float(value)
        elif isinstance(value, str):
            out[f"{name}#len"] = float(len(value))
            if len(value) <= CATEGORY_MAX_LEN and " " not in value:
                out[f"{name}={value}"] = 1.0
        elif isinstance(value, list | tuple):
            out[f"{name}#n"] = float(len(value))
        elif isinstance(value, Mapping):
            out.update(param_features(value, f"{name}."))
    return out

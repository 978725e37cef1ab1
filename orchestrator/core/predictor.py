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
#: The middle quantile level.
MID = 0.5
#: A category never seen in training: the interval is this much wider (on the log scale).
NOVELTY_WIDENING = 2.0
#: The narrowest half-interval on the log scale with one row (a factor of 4 either way);
#: it shrinks with the square root of the rows, so identical samples still get a spread.
PRIOR_SPREAD = math.log(4.0)
_Z90 = 1.2815515655446004
#: The levels an estimate states: p10, p50, p90.
LEVELS = np.array([0.1, 0.5, 0.9])
#: The largest figure any model states (1e12: ms, units), on the log scale: whatever a model
#: learned, what it predicts fits a 64-bit integer column.
_LOG_CAP = math.log1p(1e12)
#: The feature that counts the items flowing into a stage (its logarithm).
IN_ITEMS = "in_items"


def extrapolates(name: str) -> bool:
    """Whether a feature may go beyond the values training saw: a logarithm of a size does
    (the prediction follows a power law of the size); any other is held within the range
    seen, since a linear term on the log scale grows exponentially once outside it."""
    return name.endswith("#log") or name == IN_ITEMS


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
    #: The range of each feature in training (empty in models fitted before it was kept):
    #: a value outside it widens the interval, and is held to it unless it ``extrapolates``.
    lows: list[float] = field(default_factory=list)
    highs: list[float] = field(default_factory=list)

    # -- prediction --------------------------------------------------------------------------

    def center(self, features: Mapping[str, float]) -> tuple[float, float]:
        """The log-scale prediction, and 2 when a category or a value is one training never
        saw (its interval is twice as wide), else 1."""
        x = np.array([_number(features.get(n)) for n in self.names], dtype=float)
        outside = False
        if self.lows and len(self.lows) == len(self.names):
            lows, highs = np.array(self.lows), np.array(self.highs)
            outside = bool(np.any((x < lows) | (x > highs)))
            held = np.array([not extrapolates(n) for n in self.names], dtype=bool)
            x = np.where(held, np.clip(x, lows, highs), x)
        z = (x - np.array(self.means)) / np.array(self.scales) if self.names else x
        center = self.intercept + float(np.dot(self.coef, z)) if self.names else self.intercept
        keys = {name.split("=", 1)[0] for name in self.categories}
        novel = outside or any(
            "=" in f and f.split("=", 1)[0] in keys and f not in self.categories
            for f, v in features.items()
            if v
        )
        return center, NOVELTY_WIDENING if novel else 1.0

    def at(self, features: Mapping[str, float], levels: np.ndarray) -> np.ndarray:
        """The value at each quantile level (0..1) on new data: the cross-validated
        residuals' quantiles (with split conformal's finite-sample correction), never
        narrower than the prior spread few rows call for. Increasing in the level, so values
        of several models at the same level are comonotonic (a slow machine is slow for
        every stage of a run)."""
        center, widen = self.center(features)
        res = np.array(self.residuals)
        mid = float(np.median(res))
        n = len(res)
        stretched = np.clip(MID + (levels - MID) * (n + 1) / n, 0.0, 1.0)
        offsets = np.quantile(res, stretched) - mid
        prior = self.floor() * _normal_quantile(levels) / _Z90
        offsets = np.where(np.abs(prior) > np.abs(offsets), prior, offsets)
        return np.maximum(0.0, np.expm1(np.minimum(center + mid + offsets * widen, _LOG_CAP)))

    def quantiles(self, features: Mapping[str, float]) -> Quantiles:
        p10, p50, p90 = self.at(features, LEVELS)
        return Quantiles(float(p10), float(p50), float(p90))

    def floor(self) -> float:
        """The narrowest half-interval (log scale) its rows justify."""
        return PRIOR_SPREAD / math.sqrt(self.rows)

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
        lows=x.min(axis=0).tolist(),
        highs=x.max(axis=0).tolist(),
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


def _normal_quantile(levels: np.ndarray) -> np.ndarray:
    from statistics import NormalDist

    unit = NormalDist()
    return np.array([unit.inv_cdf(min(max(float(q), 1e-6), 1 - 1e-6)) for q in levels])


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
                if value >= 0:  # a time often grows as a power of a size or a duration
                    out[f"{name}#log"] = math.log(float(value) + 1e-3)
        elif isinstance(value, str):
            out[f"{name}#len"] = float(len(value))
            if len(value) <= CATEGORY_MAX_LEN and " " not in value:
                out[f"{name}={value}"] = 1.0
        elif isinstance(value, list | tuple):
            out[f"{name}#n"] = float(len(value))
        elif isinstance(value, Mapping):
            out.update(param_features(value, f"{name}."))
    return out

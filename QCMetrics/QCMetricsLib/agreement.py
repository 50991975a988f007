"""Agreement between raters (R-9.1.2, Appendix D): Cohen's kappa, weighted kappa, Fleiss' kappa,
Scott's pi and Pearson correlation.

Appendix D's kappa: with the confusion matrix N (rows rater 1, columns rater 2),
``Acc = Σ N_jj / Σ N_ij``, ``p_e = Σ_j row_j · col_j / N²`` and ``κ = (Acc − p_e) / (1 − p_e)``.
Weighted kappa (Cohen 1968) for ordinal scores such as erosion 0–5, joint-space narrowing 0–4 or
TI-RADS 1–5: ``κ_w = 1 − Σ w_ij O_ij / Σ w_ij E_ij`` with ``w_ij = |i − j| / (k − 1)`` (linear)
or its square (quadratic), over the categories of the *scale* (pass ``categories``) so that the
weights do not depend on which scores happen to occur. Fleiss' kappa (1971) generalises Scott's pi
to more than two raters; with two raters it *is* Scott's pi (shared marginals), not Cohen's kappa.

Each function returns an :class:`AgreementValue`: the number, or NaN with the reason when the
statistic is undefined (e.g. both raters used one category only: chance agreement is 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from RTSSBridgeLib.errors import InputError

WEIGHTS = (None, "linear", "quadratic")


@dataclass(frozen=True)
class AgreementValue:
    """An agreement statistic with what it was computed from."""

    name: str
    value: float
    n: int
    reason: str = ""
    details: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"statistic": self.name, "value": None if math.isnan(self.value) else float(self.value), "n": self.n,
                "reason": self.reason, **(self.details or {})}


def _categories(ratings: Sequence[Sequence[Any]], categories: Optional[Sequence[Any]]) -> List[Any]:
    if categories is not None:
        cats = list(categories)
        if len(set(cats)) != len(cats):
            raise InputError("categories must be distinct", field="categories")
        seen = {v for r in ratings for v in r}
        unknown = sorted(map(str, seen - set(cats)))
        if unknown:
            raise InputError(f"ratings {', '.join(unknown[:5])} are not among the categories {cats}",
                             field="categories")
        return cats
    values = {v for r in ratings for v in r}
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def confusion_matrix(rater1: Sequence[Any], rater2: Sequence[Any],
                     categories: Optional[Sequence[Any]] = None) -> tuple[np.ndarray, List[Any]]:
    """Square matrix N[i, j] = number of subjects rated category i by rater 1 and j by rater 2."""
    a, b = list(rater1), list(rater2)
    if len(a) != len(b):
        raise InputError(f"the two raters rated {len(a)} and {len(b)} subjects; they must rate the same subjects",
                         field="ratings")
    if not a:
        raise InputError("no ratings", field="ratings")
    cats = _categories([a, b], categories)
    index = {c: n for n, c in enumerate(cats)}
    matrix = np.zeros((len(cats), len(cats)), dtype=np.int64)
    np.add.at(matrix, ([index[v] for v in a], [index[v] for v in b]), 1)
    return matrix, cats


def kappa_from_matrix(matrix: Any, weights: Optional[str] = None) -> AgreementValue:
    """Cohen's kappa (Appendix D) or weighted kappa of a k×k confusion matrix."""
    if weights not in WEIGHTS:
        raise InputError(f"must be one of none, linear, quadratic; got {weights!r}", field="weights")
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise InputError(f"must be a square matrix, got shape {list(m.shape)}", field="matrix")
    if np.any(m < 0):
        raise InputError("counts must not be negative", field="matrix")
    n = float(m.sum())
    name = "cohen_kappa" if weights is None else f"cohen_kappa_{weights}"
    if n == 0:
        return AgreementValue(name, float("nan"), 0, "no subjects")
    rows, cols = m.sum(axis=1), m.sum(axis=0)
    k = m.shape[0]
    if weights is None:
        observed = float(np.trace(m)) / n
        chance = float(rows @ cols) / (n * n)
        details = {"observed_agreement": observed, "chance_agreement": chance}
        if chance >= 1.0:
            return AgreementValue(name, float("nan"), int(n), "chance agreement is 1 (one category only)", details)
        return AgreementValue(name, (observed - chance) / (1.0 - chance), int(n), "", details)
    positions = np.arange(k, dtype=np.float64)
    diff = np.abs(positions[:, None] - positions[None, :]) / max(k - 1, 1)
    w = diff if weights == "linear" else diff**2
    expected = np.outer(rows, cols) / n
    disagreement_chance = float((w * expected).sum())
    if disagreement_chance == 0:
        return AgreementValue(name, float("nan"), int(n), "no disagreement expected by chance (one category only)")
    return AgreementValue(name, 1.0 - float((w * m).sum()) / disagreement_chance, int(n))


def cohen_kappa(rater1: Sequence[Any], rater2: Sequence[Any], weights: Optional[str] = None,
                categories: Optional[Sequence[Any]] = None) -> AgreementValue:
    """Cohen's kappa of two raters' category labels (``weights``: None, "linear", "quadratic";
    ``categories``: the ordered scale, e.g. ``range(6)`` for erosion scores 0–5)."""
    matrix, cats = confusion_matrix(rater1, rater2, categories)
    result = kappa_from_matrix(matrix, weights)
    details = dict(result.details or {})
    details.update({"categories": [c if isinstance(c, (int, float, str)) else str(c) for c in cats],
                    "weights": weights or "none"})
    return AgreementValue(result.name, result.value, result.n, result.reason, details)


def fleiss_table(ratings: Sequence[Sequence[Any]],
                 categories: Optional[Sequence[Any]] = None) -> tuple[np.ndarray, List[Any]]:
    """Subjects × categories table of how many raters chose each category, from a subjects × raters
    list of ratings (every subject rated by the same number of raters)."""
    rows = [list(r) for r in ratings]
    if not rows:
        raise InputError("no subjects", field="ratings")
    n_raters = len(rows[0])
    if n_raters < 2 or any(len(r) != n_raters for r in rows):
        raise InputError("every subject needs the same number (at least 2) of ratings", field="ratings")
    cats = _categories(rows, categories)
    index = {c: n for n, c in enumerate(cats)}
    table = np.zeros((len(rows), len(cats)), dtype=np.int64)
    for s, r in enumerate(rows):
        for v in r:
            table[s, index[v]] += 1
    return table, cats


def fleiss_kappa_from_table(table: Any) -> AgreementValue:
    """Fleiss' kappa of a subjects × categories count table (equal raters per subject)."""
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise InputError(f"must be a subjects x categories table, got shape {list(t.shape)}", field="table")
    per_subject = t.sum(axis=1)
    n = float(per_subject[0])
    if n < 2 or np.any(per_subject != n):
        raise InputError("every subject needs the same number (at least 2) of ratings", field="table")
    n_subjects = t.shape[0]
    p_i = (np.sum(t * t, axis=1) - n) / (n * (n - 1))
    p_bar = float(p_i.mean())
    p_j = t.sum(axis=0) / (n_subjects * n)
    p_e = float(np.sum(p_j * p_j))
    details = {"observed_agreement": p_bar, "chance_agreement": p_e, "raters": int(n)}
    if p_e >= 1.0:
        return AgreementValue("fleiss_kappa", float("nan"), n_subjects, "chance agreement is 1 (one category only)",
                              details)
    return AgreementValue("fleiss_kappa", (p_bar - p_e) / (1.0 - p_e), n_subjects, "", details)


def fleiss_kappa(ratings: Sequence[Sequence[Any]], categories: Optional[Sequence[Any]] = None) -> AgreementValue:
    """Fleiss' kappa of a subjects × raters list of category labels."""
    table, _ = fleiss_table(ratings, categories)
    return fleiss_kappa_from_table(table)


def scott_pi(rater1: Sequence[Any], rater2: Sequence[Any],
             categories: Optional[Sequence[Any]] = None) -> AgreementValue:
    """Scott's pi (1955): chance agreement from the pooled marginals of both raters."""
    matrix, _ = confusion_matrix(rater1, rater2, categories)
    m = matrix.astype(np.float64)
    n = float(m.sum())
    observed = float(np.trace(m)) / n
    pooled = (m.sum(axis=0) + m.sum(axis=1)) / (2 * n)
    chance = float(np.sum(pooled * pooled))
    if chance >= 1.0:
        return AgreementValue("scott_pi", float("nan"), int(n), "chance agreement is 1 (one category only)")
    return AgreementValue("scott_pi", (observed - chance) / (1.0 - chance), int(n), "",
                          {"observed_agreement": observed, "chance_agreement": chance})


def pearson(x: Sequence[float], y: Sequence[float]) -> AgreementValue:
    """Pearson's correlation coefficient r of paired values (e.g. volumes or scores across cases)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise InputError(f"needs two equally long lists of numbers, got {a.shape} and {b.shape}", field="values")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2:
        return AgreementValue("pearson_r", float("nan"), int(a.size), "fewer than two finite pairs")
    for v in (a, b):  # constant up to rounding (e.g. the same volume in mL every case): r is undefined
        if np.ptp(v) <= 1e-12 * max(float(np.max(np.abs(v))), 1e-300):
            return AgreementValue("pearson_r", float("nan"), int(a.size), "one of the variables is constant")
    da, db = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(da @ da) * float(db @ db))
    if denominator == 0:
        return AgreementValue("pearson_r", float("nan"), int(a.size), "one of the variables is constant")
    r = float(da @ db) / denominator
    return AgreementValue("pearson_r", max(-1.0, min(1.0, r)), int(a.size))

"""Input drift: population stability index (PSI) of features against a reference window.

Why PSI: it is the industry's common currency for "has the input distribution moved since
the model learned it" (< 0.1 stable, 0.1–0.25 moderate shift, > 0.25 major shift), works for
numeric and categorical features alike, and is cheap. Bins are the reference's quantiles (so
each reference bin holds about the same share) plus one bin for missing values, because a
feature that starts going missing is drift too.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Floor of a bin share: an empty bin would make the log-ratio infinite.
EPS = 1e-4
#: Conventional reading of the index.
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25


def _psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    r = np.maximum(ref_share, EPS)
    c = np.maximum(cur_share, EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_numeric(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float:
    """PSI of a numeric feature with reference-quantile bins and a missing-value bin."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    ok = ref[~np.isnan(ref)]
    edges = np.unique(np.quantile(ok, np.linspace(0, 1, bins + 1)[1:-1])) if len(ok) else []

    def shares(x: np.ndarray) -> np.ndarray:
        miss = np.isnan(x)
        idx = np.searchsorted(edges, x[~miss], side="right")
        counts = np.bincount(idx, minlength=len(edges) + 1).astype(float)
        return np.append(counts, miss.sum()) / len(x)

    return _psi(shares(ref), shares(cur))


def psi_categorical(reference: Sequence[Any], current: Sequence[Any]) -> float:
    """PSI of a categorical feature (missing is its own level)."""
    ref = pd.Series(reference, dtype=object).fillna("(missing)").astype(str)
    cur = pd.Series(current, dtype=object).fillna("(missing)").astype(str)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    levels = sorted(set(ref) | set(cur))
    r = ref.value_counts(normalize=True).reindex(levels, fill_value=0.0).to_numpy()
    c = cur.value_counts(normalize=True).reindex(levels, fill_value=0.0).to_numpy()
    return _psi(r, c)


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """PSI choosing the numeric or categorical form from the reference's dtype."""
    if pd.api.types.is_numeric_dtype(reference) and not pd.api.types.is_bool_dtype(reference):
        return psi_numeric(reference.to_numpy(dtype=float), current.to_numpy(dtype=float), bins)
    return psi_categorical(reference.astype(object), current.astype(object))


def drift_level(value: float) -> str:
    """``stable`` / ``moderate`` / ``major`` (or ``unknown`` for NaN)."""
    if not np.isfinite(value):
        return "unknown"
    return "major" if value > PSI_MAJOR else "moderate" if value > PSI_MODERATE else "stable"

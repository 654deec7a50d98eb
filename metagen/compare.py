"""What per-run analysis and the cross-run report share: per-byte log-likelihood,
the one-column-per-scorer view of the texts, scorer pairs and correlations."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

NORMAL_Z = 1.959963984540054  # two-sided 95%


def ll_per_byte(scores: pd.DataFrame) -> pd.Series:
    """Log-likelihood per UTF-8 byte, the score comparable across tokenizers.

    NaN for empty texts (zero bytes), which carry no evidence either way.
    """
    n_bytes = scores["n_bytes"].astype("float64")
    values = scores["logprob_sum"].astype("float64") / n_bytes.where(n_bytes > 0)
    return values.rename("ll_per_byte")


def wide_by_scorer(texts: pd.DataFrame, key: str = "generation_id") -> pd.DataFrame:
    """Per-byte LL with one row per text and one column per scorer."""
    grouped = texts.groupby([key, "scorer"])["ll_per_byte"].mean()
    return grouped.unstack("scorer").sort_index(axis=1)


def scorer_pairs(wide: pd.DataFrame) -> list[tuple[str, str]]:
    """Scorer pairs (a, b) in sorted order; their likelihood ratio is b - a."""
    return list(combinations(sorted(wide.columns), 2))


def correlation(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    """(Spearman, Pearson); NaN when undefined (too few points or a constant)."""
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return float(stats.spearmanr(x, y).statistic), float(stats.pearsonr(x, y)[0])

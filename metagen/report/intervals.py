"""95% intervals for the report: paired prompt bootstrap, Wilson and Fisher.

The bootstrap resamples prompts (all texts of a drawn prompt together), so texts
that share a prompt are never treated as independent evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from metagen.compare import NORMAL_Z

N_BOOT = 2000  # resamples per interval


def bootstrap_contrast(
    scored: pd.DataFrame,
    cells: Sequence[tuple[str, str]],
    weights: Sequence[float],
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, float]:
    """A linear contrast of cell means M[scorer, generator] with a paired bootstrap.

    Prompts are resampled with replacement and every cell of a replicate uses
    the same draw, so text difficulty shared across cells cancels as it should.
    """
    scorers = sorted({scorer for scorer, _ in cells})
    parts = []
    for index, (scorer, generator) in enumerate(cells):
        mask = (scored["scorer"] == scorer) & (scored["generator"] == generator)
        parts.append(scored[mask].assign(cell=index))
    data = pd.concat(parts, ignore_index=True)
    # Pair the scorers: keep only texts that every scorer of the contrast scored.
    n_scorers = data.groupby("text_id")["scorer"].transform("nunique")
    data = data[n_scorers == len(scorers)]
    prompt_codes, prompts = pd.factorize(data["prompt_key"])
    sums = np.zeros((len(prompts), len(cells)))
    counts = np.zeros_like(sums)
    np.add.at(sums, (prompt_codes, data["cell"].to_numpy()), data["ll_per_byte"])
    np.add.at(counts, (prompt_codes, data["cell"].to_numpy()), 1.0)
    contrast = np.asarray(weights, dtype="float64")
    rng = np.random.default_rng(seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = float((sums.sum(0) / counts.sum(0)) @ contrast)
        draws = _prompt_draws(rng, len(prompts), n_boot)
        boot = ((draws @ sums) / (draws @ counts)) @ contrast
    boot = boot[np.isfinite(boot)]
    low, high = np.percentile(boot, [2.5, 97.5]) if boot.size else (np.nan, np.nan)
    n_texts = data["text_id"].nunique()
    interval = {"ci_low": float(low), "ci_high": float(high)}
    return {
        "estimate": estimate,
        **interval,
        "n_texts": n_texts,
        "n_prompts": len(prompts),
    }


def _prompt_draws(rng: np.random.Generator, n_prompts: int, n_boot: int) -> np.ndarray:
    """How often each prompt is drawn in each resample (n_boot x n_prompts)."""
    if n_prompts == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n_prompts, np.full(n_prompts, 1 / n_prompts), size=n_boot)


def wilson_interval(k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval for k successes out of n."""
    k, n = np.asarray(k, dtype="float64"), np.asarray(n, dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        z2 = NORMAL_Z**2
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = NORMAL_Z * np.sqrt(p * (1 - p) / n + z2 / (4 * n**2)) / (1 + z2 / n)
    return centre - half, centre + half


def fisher_interval(r: float, n: int) -> tuple[float, float]:
    """95% interval for a correlation coefficient via Fisher's z."""
    if n <= 3 or not np.isfinite(r):
        return float("nan"), float("nan")
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    half = NORMAL_Z / np.sqrt(n - 3)
    return float(np.tanh(z - half)), float(np.tanh(z + half))

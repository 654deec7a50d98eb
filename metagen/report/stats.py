"""Cross-run statistics: score matrix, self-preference, preference rates, agreement.

Everything works on the long "texts" table from `scored_texts`: one row per
(text, scorer) with the per-byte log-likelihood and the text's context.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from metagen.analyze import NORMAL_Z, correlation, ll_per_byte

N_BOOT = 2000
# Defaults for context columns an older or partial scores table may lack.
TEXT_CONTEXT = {
    "generator": "",
    "sampler": "",
    "temperature": np.nan,
    "prompt_set": "",
    "prompt_id": -1,
    "n_bytes": 0,
    "logprob_sum": np.nan,
    "perplexity": np.nan,
}


def scored_texts(generations: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Join scores with their generations; add ll_per_byte, text_id, prompt_key."""
    if scores.empty:
        scores = pd.DataFrame(columns=["run_dir", "generation_id", "scorer"])
    defaults = {"run_dir": "."} | TEXT_CONTEXT
    texts = scores.assign(**{k: v for k, v in defaults.items() if k not in scores})
    texts["ll_per_byte"] = ll_per_byte(texts)
    keys = ["run_dir", "generation_id"]
    extra = (
        generations.assign(run_dir=".") if "run_dir" not in generations else generations
    )
    extra = extra.reindex(columns=[*keys, "prompt", "text"]).drop_duplicates(keys)
    texts = texts.drop(columns=["prompt", "text"], errors="ignore")
    # Cast keys: an empty table's columns come back untyped and would not join.
    texts[keys] = texts[keys].astype(str)
    extra[keys] = extra[keys].astype(str)
    texts = texts.merge(extra, on=keys, how="left")
    # Without its generations row a text still counts; name its prompt by id.
    by_id = "prompt #" + texts["prompt_id"].astype(str)
    texts["prompt"] = texts["prompt"].fillna(by_id).astype(str)
    texts["text"] = texts["text"].fillna("").astype(str)
    texts["text_id"] = texts["run_dir"].astype(str) + "/" + texts["generation_id"]
    texts["prompt_key"] = texts["prompt_set"].astype(str) + "\x1f" + texts["prompt"]
    return texts


def wide_ll(texts: pd.DataFrame) -> pd.DataFrame:
    """Per-byte LL: one row per text_id, one column per scorer (NaN where absent)."""
    grouped = texts.groupby(["text_id", "scorer"])["ll_per_byte"].mean()
    return grouped.unstack("scorer").sort_index(axis=1)


def text_info(texts: pd.DataFrame) -> pd.DataFrame:
    """The per-text context (generator, sampler, prompt, ...) indexed by text_id."""
    return texts.drop_duplicates("text_id").set_index("text_id")


def score_matrix(texts: pd.DataFrame) -> pd.DataFrame:
    """Mean per-byte LL by scorer x generator x sampler (sampler 'all' pools them)."""
    scored = texts[texts["ll_per_byte"].notna()]
    columns = ["scorer", "generator", "sampler", "mean_ll_per_byte", "n"]
    parts = []
    for by in (["scorer", "generator"], ["scorer", "generator", "sampler"]):
        grouped = scored.groupby(by)["ll_per_byte"].agg(["mean", "size"])
        part = grouped.reset_index().rename(columns={"mean": columns[3], "size": "n"})
        parts.append(part.assign(sampler=part.get("sampler", "all")))
    return pd.concat(parts, ignore_index=True).reindex(columns=columns)


def matrix_pivot(matrix: pd.DataFrame) -> pd.DataFrame:
    """M[scorer, generator] over all samplers."""
    pooled = matrix[matrix["sampler"] == "all"]
    return pooled.pivot(index="scorer", columns="generator", values="mean_ll_per_byte")


def self_preference(
    texts: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0
) -> pd.DataFrame:
    """Raw self-bias per model and the adjusted interaction contrast per pair."""
    scored = texts[texts["ll_per_byte"].notna()]
    # Only (scorer, generator) cells with texts enter: scorer panels may differ.
    observed = set(zip(scored["scorer"], scored["generator"], strict=True))
    models = sorted({scorer for scorer, generator in observed if scorer == generator})
    rows = []
    for model in models:
        others = sorted(g for s, g in observed if s == model and g != model)
        if others:
            cells = [(model, model)] + [(model, other) for other in others]
            weights = [1.0] + [-1.0 / len(others)] * len(others)
            rows.append(("raw", model, "others", cells, weights))
    for a, b in combinations(models, 2):
        cells = [(a, a), (b, b), (a, b), (b, a)]
        if observed.issuperset(cells):
            rows.append(("adjusted", a, b, cells, [1.0, 1.0, -1.0, -1.0]))

    records = [
        {"kind": kind, "model_a": a, "model_b": b}
        | bootstrap_contrast(scored, cells, weights, n_boot, seed)
        for kind, a, b, cells, weights in rows
    ]
    columns = ["kind", "model_a", "model_b", "estimate", "ci_low", "ci_high"]
    return pd.DataFrame(records, columns=columns + ["n_texts", "n_prompts"])


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


PREFERENCE_COLUMNS = ["scorer", "n_preferred", "n", "rate", "ci_low", "ci_high"]


def preference_rates(texts: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group and scorer: share of texts where that scorer gives the highest LL.

    A text counts for the scorers that scored it, when at least two did.
    """
    wide = wide_ll(texts)
    wide = wide[wide.notna().sum(axis=1) >= 2]
    if wide.empty:
        return pd.DataFrame(columns=[*by, *PREFERENCE_COLUMNS])
    long = wide.stack().dropna().rename("ll").reset_index()
    winners = wide.idxmax(axis=1).reindex(long["text_id"]).to_numpy()
    long["won"] = long["scorer"].to_numpy() == winners
    long = long.join(text_info(texts)[list(by)], on="text_id")
    grouped = long.groupby([*by, "scorer"], dropna=False)["won"]
    result = grouped.agg(n_preferred="sum", n="size").reset_index()
    result["rate"] = result["n_preferred"] / result["n"]
    low, high = wilson_interval(result["n_preferred"], result["n"])
    return result.assign(ci_low=low, ci_high=high)


def preference_table(texts: pd.DataFrame) -> pd.DataFrame:
    """Preference rates overall and by generator, sampler, temperature and cell."""
    cell = ["generator", "sampler", "temperature"]
    levels = {"overall": [], **{column: [column] for column in cell}, "cell": cell}
    parts = [
        preference_rates(texts, by).assign(level=level) for level, by in levels.items()
    ]
    table = pd.concat(parts, ignore_index=True)
    table = table.reindex(columns=["level", *cell, *PREFERENCE_COLUMNS])
    table[["generator", "sampler"]] = table[["generator", "sampler"]].fillna("all")
    return table


def agreement(texts: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Spearman correlation per scorer pair, then best-of-N selection results."""
    wide = wide_ll(texts)
    records = []
    for a, b in combinations(wide.columns, 2):
        both = wide[[a, b]].dropna()
        rho, _ = correlation(both[a], both[b])
        records.append(("spearman", "scorer", a, b, rho, len(both)))
    spearman = pd.DataFrame(records, columns=AGREEMENT_COLUMNS)
    return pd.concat([spearman, best_of_n(texts, seed)], ignore_index=True)


AGREEMENT_COLUMNS = ["section", "selector_kind", "selector", "judge", "value", "n"]


def best_of_n(texts: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Pick one of N samples per (run, prompt) and score the pick by other judges.

    Selectors: the consensus (mean per-scorer z-score), each single scorer, a
    seeded random pick, and the average over all samples as the baseline.
    """
    wide = wide_ll(texts).dropna()
    info = text_info(texts).reindex(wide.index)
    groups = info["run_dir"].astype(str) + "\x1f" + info["prompt_key"]
    multi = groups.map(groups.value_counts()) > 1
    wide, groups = wide[multi], groups[multi]
    if wide.empty:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS)
    # A scorer that gives every text the same score adds no information: z = 0.
    z = ((wide - wide.mean()) / wide.std(ddof=0)).fillna(0.0)
    rng = np.random.default_rng(seed)
    selectors = [("consensus", "consensus", z.mean(axis=1))]
    selectors += [("scorer", scorer, wide[scorer]) for scorer in wide.columns]
    selectors.append(("random", "random", pd.Series(rng.random(len(wide)), wide.index)))
    records = []
    for kind, name, score in selectors:
        picked = score.groupby(groups).idxmax()
        for judge in wide.columns:
            if kind == "scorer" and judge == name:
                continue
            value = wide.loc[picked.to_numpy(), judge].mean()
            records.append(("best_of_n", kind, name, judge, value, len(picked)))
    n_groups = groups.nunique()
    for judge in wide.columns:
        average = wide[judge].mean()
        records.append(("best_of_n", "average", "average", judge, average, n_groups))
    return pd.DataFrame(records, columns=AGREEMENT_COLUMNS)

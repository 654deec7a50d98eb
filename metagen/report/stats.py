"""Cross-run statistics: score matrix, self-preference, preference rates, agreement.

Everything works on the long "texts" table from `scored_texts`: one row per
(text, scorer) with the per-byte log-likelihood and the text's context.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from metagen.compare import correlation, ll_per_byte, wide_by_scorer
from metagen.report.intervals import N_BOOT, bootstrap_contrast, wilson_interval

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


PREFERENCE_COLUMNS = ["scorer", "n_preferred", "n", "rate", "ci_low", "ci_high"]
PREFERENCE_CELL = ["generator", "sampler", "temperature"]  # what rates group by


def preference_wins(texts: pd.DataFrame) -> pd.DataFrame:
    """One row per (text, scorer) with `won`: whether that scorer gives the text the
    highest LL, and the text's context columns. A text counts for the scorers that
    scored it, when at least two did."""
    wide = wide_by_scorer(texts, "text_id")
    wide = wide[wide.notna().sum(axis=1) >= 2]
    long = wide.stack().dropna().rename("ll").reset_index()
    winners = wide.idxmax(axis=1).reindex(long["text_id"]).to_numpy()
    long["won"] = long["scorer"].to_numpy() == winners
    return long.join(text_info(texts)[PREFERENCE_CELL], on="text_id")


def preference_rates(
    texts: pd.DataFrame, by: Sequence[str], wins: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per group and scorer: share of texts where that scorer gives the highest LL.

    `wins` (preference_wins(texts)) is taken when given, so levels share one table.
    """
    wins = preference_wins(texts) if wins is None else wins
    if wins.empty:
        return pd.DataFrame(columns=[*by, *PREFERENCE_COLUMNS])
    grouped = wins.groupby([*by, "scorer"], dropna=False)["won"]
    result = grouped.agg(n_preferred="sum", n="size").reset_index()
    result["rate"] = result["n_preferred"] / result["n"]
    low, high = wilson_interval(result["n_preferred"], result["n"])
    return result.assign(ci_low=low, ci_high=high)


def preference_table(texts: pd.DataFrame) -> pd.DataFrame:
    """Preference rates overall and by generator, sampler, temperature and cell."""
    cell = PREFERENCE_CELL
    levels = {"overall": [], **{column: [column] for column in cell}, "cell": cell}
    wins = preference_wins(texts)
    parts = [
        preference_rates(texts, by, wins).assign(level=level)
        for level, by in levels.items()
    ]
    table = pd.concat(parts, ignore_index=True)
    table = table.reindex(columns=["level", *cell, *PREFERENCE_COLUMNS])
    table[["generator", "sampler"]] = table[["generator", "sampler"]].fillna("all")
    return table


def agreement(texts: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Spearman correlation per scorer pair, then best-of-N selection results."""
    wide = wide_by_scorer(texts, "text_id")
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
    wide = wide_by_scorer(texts, "text_id").dropna()
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

"""Per-run analysis: turn one run's generations and scores into a summary table.

The summary is long-format (one number per row) so that runs with any scorer
panel share one schema and a sweep's summaries concatenate without reshaping.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pandas as pd

from metagen.compare import (
    NORMAL_Z,
    correlation,
    ll_per_byte,
    scorer_pairs,
    wide_by_scorer,
)

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "section", "scorer", "other", "metric", "value", "n",
    "generation_id", "prompt", "text",
]  # fmt: skip


def summarize(generations: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Summarise one run (or any set of texts with unique generation ids)."""
    rows = _throughput_rows(generations)
    if not scores.empty:
        texts = _join_texts(generations, scores)
        wide = wide_by_scorer(texts)
        info = texts.drop_duplicates("generation_id").set_index("generation_id")
        rows += _scorer_rows(texts)
        rows += _preference_rows(wide)
        rows += _pair_rows(wide, info)
        rows += _example_rows(wide, info)
        rows += _self_consistency_rows(texts)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    summary["value"] = summary["value"].astype("float64")
    summary["n"] = summary["n"].astype("int64")
    return summary


def _row(section: str, metric: str, value: float, n: int, **fields: str) -> dict:
    row = dict.fromkeys(SUMMARY_COLUMNS, "")
    row.update(section=section, metric=metric, value=float(value), n=int(n))
    row.update({key: str(text) for key, text in fields.items()})
    return row


def _join_texts(generations: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    wanted = ["generation_id", "prompt", "text", "gen_seconds", "gen_logprob_sum"]
    extra = generations.reindex(columns=wanted).drop_duplicates("generation_id")
    texts = scores.drop(columns=[c for c in wanted[1:] if c in scores.columns])
    texts = texts.merge(extra, on="generation_id", how="left")
    texts["ll_per_byte"] = ll_per_byte(texts)
    texts["prompt"] = texts["prompt"].fillna("")
    texts["text"] = texts["text"].fillna("")
    return texts


def _throughput_rows(generations: pd.DataFrame) -> list[dict]:
    if generations.empty:
        return []
    tokens = float(generations["n_new_tokens"].sum())
    seconds = float(generations["gen_seconds"].sum())
    n = len(generations)
    rate = tokens / seconds if seconds > 0 else float("nan")
    n_empty = int((generations["text"].fillna("") == "").sum())
    return [
        _row("throughput", "tokens_per_second", rate, n),
        _row("throughput", "new_tokens", tokens, n),
        _row("throughput", "gen_seconds", seconds, n),
        _row("throughput", "empty_texts", n_empty, n),
    ]


def _scorer_rows(texts: pd.DataFrame) -> list[dict]:
    rows = []
    for scorer, group in texts.groupby("scorer"):
        add = partial(_row, "scorer", scorer=scorer)
        scored = group[group["ll_per_byte"].notna()]
        for column in ("perplexity", "bits_per_byte", "ll_per_byte"):
            values = scored[column].astype("float64")
            rows.append(add(f"mean_{column}", values.mean(), len(scored)))
            rows.append(add(f"median_{column}", values.median(), len(scored)))
        # Empty texts are counted, not scored: a per-byte score of nothing is undefined.
        rows.append(add("unscored_texts", len(group) - len(scored), len(group)))
    return rows


def _preference_rows(wide: pd.DataFrame) -> list[dict]:
    if wide.shape[1] < 2:
        return []
    complete = wide.dropna()
    n = len(complete)
    winners = complete.idxmax(axis=1) if n else pd.Series(dtype="str")
    rows = []
    for scorer in wide.columns:
        count = int((winners == scorer).sum())
        rate = count / n if n else float("nan")
        rows.append(_row("preference", "preferred_texts", count, n, scorer=scorer))
        rows.append(_row("preference", "preference_rate", rate, n, scorer=scorer))
    return rows


def _pair_rows(wide: pd.DataFrame, info: pd.DataFrame) -> list[dict]:
    rows = []
    for a, b in scorer_pairs(wide):
        both = wide[[a, b]].dropna()
        ratio = both[b] - both[a]
        n = len(ratio)
        sem = ratio.std() / np.sqrt(n) if n > 1 else float("nan")
        pair = {
            "mean_likelihood_ratio": ratio.mean(),
            "ratio_ci_low": ratio.mean() - NORMAL_Z * sem,
            "ratio_ci_high": ratio.mean() + NORMAL_Z * sem,
            "median_likelihood_ratio": ratio.median(),
            "other_preferred_rate": (ratio > 0).mean() if n else float("nan"),
        }
        rows += [_row("pair", k, v, n, scorer=a, other=b) for k, v in pair.items()]
        for source, column in (("length", "n_bytes"), ("gen_seconds", "gen_seconds")):
            spearman, pearson = correlation(info.loc[ratio.index, column], ratio)
            for name, value in (("spearman", spearman), ("pearson", pearson)):
                metric = f"{name}_{source}"
                rows.append(_row("correlation", metric, value, n, scorer=a, other=b))
    return rows


def _text_fields(info: pd.DataFrame, generation_id: str) -> dict[str, str]:
    text = info.loc[generation_id]
    return {
        "generation_id": generation_id,
        "prompt": text["prompt"],
        "text": text["text"],
    }


def _example_rows(wide: pd.DataFrame, info: pd.DataFrame) -> list[dict]:
    rows = []
    for a, b in scorer_pairs(wide):
        ratio = (wide[b] - wide[a]).dropna()
        if ratio.empty:
            continue
        pick = ratio.abs().idxmax()
        fields = _text_fields(info, pick)
        value, n = ratio[pick], len(ratio)
        rows.append(
            _row("example", "most_controversial", value, n, scorer=a, other=b, **fields)
        )
    for scorer in wide.columns:
        values = wide[scorer].dropna()
        for metric, pick in _extremes(values):
            fields = _text_fields(info, pick)
            value, n = values[pick], len(values)
            rows.append(_row("example", metric, value, n, scorer=scorer, **fields))
    return rows


def _extremes(values: pd.Series) -> list[tuple[str, str]]:
    if values.empty:
        return []
    return [("favourite", values.idxmax()), ("least_favourite", values.idxmin())]


def _self_consistency_rows(texts: pd.DataFrame) -> list[dict]:
    """How well scoring reproduces the generator's own log-probs on its own text.

    A retokenized text can split differently from the generated ids, so the
    log-prob comparison is only meaningful where the ids survived retokenization.
    """
    if "retokenized_same" not in texts.columns:
        return []
    own = texts[texts["scorer"] == texts["generator"]]
    rows = []
    for scorer, group in own.groupby("scorer"):
        same = group["retokenized_same"].astype("boolean")
        known = same.dropna()
        changed = float((~known).mean()) if len(known) else float("nan")
        kept = group[same.fillna(False).to_numpy(dtype=bool)]
        gap = (kept["logprob_sum"] - kept["gen_logprob_sum"]).abs().mean()
        add = partial(_row, "self_consistency", scorer=scorer)
        rows.append(add("retokenized_changed_rate", changed, len(known)))
        rows.append(add("mean_abs_logprob_gap", gap, len(kept)))
    return rows


def summary_rows(summary: pd.DataFrame, section: str, metric: str) -> pd.DataFrame:
    return summary[(summary["section"] == section) & (summary["metric"] == metric)]


def _clip(text: str, width: int = 100) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def format_summary(summary: pd.DataFrame) -> str:
    """A short printout of a run's summary for the log."""
    lines = ["Per scorer (mean perplexity per token, bits per byte):"]
    ppl = summary_rows(summary, "scorer", "mean_perplexity").set_index("scorer")[
        "value"
    ]
    bpb = summary_rows(summary, "scorer", "mean_bits_per_byte").set_index("scorer")[
        "value"
    ]
    for scorer in ppl.index:
        lines.append(
            f"  {scorer}: perplexity {ppl[scorer]:.2f}, {bpb[scorer]:.3f} bits/byte"
        )
    for _, row in summary_rows(summary, "preference", "preferred_texts").iterrows():
        lines.append(
            f"{row['scorer']} gives the highest per-byte likelihood to "
            f"{int(row['value'])} of {row['n']} texts"
        )
    for _, row in summary[summary["section"] == "correlation"].iterrows():
        if row["metric"].startswith("spearman"):
            # NaN when a side does not vary (rows of one batch share gen_seconds).
            value = "undefined" if np.isnan(row["value"]) else f"{row['value']:.3f}"
            lines.append(
                f"Spearman {row['metric'].removeprefix('spearman_')} vs ratio "
                f"({row['other']} - {row['scorer']}): {value} (n={row['n']})"
            )
    for _, row in summary_rows(summary, "example", "most_controversial").iterrows():
        lines.append(
            f"Most controversial ({row['other']} - {row['scorer']} = "
            f"{row['value']:+.3f} nats/byte): {_clip(row['text'])!r}"
        )
    for _, row in summary_rows(summary, "throughput", "tokens_per_second").iterrows():
        lines.append(f"Generation throughput: {row['value']:.1f} tokens/s")
    return "\n".join(lines)

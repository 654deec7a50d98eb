"""The report's findings in words, each number with its interval, and its tables.

Plain text only: page.py escapes and renders it for Markdown and HTML.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metagen.analyze import summary_rows
from metagen.report.figures import NATS, RenderedFigure
from metagen.report.intervals import fisher_interval
from metagen.report.merge import RunInfo
from metagen.report.stats import text_info


@dataclass
class ReportContent:
    """Everything the page shows, computed once by build_report."""

    root: str
    runs: list[RunInfo]
    texts: pd.DataFrame
    summary: pd.DataFrame  # analyze.summarize over all runs' texts
    matrix: pd.DataFrame
    self_preference: pd.DataFrame
    preferences: pd.DataFrame
    agreement: pd.DataFrame
    figures: dict[str, RenderedFigure]


def number(value: float, digits: int = 3, sign: bool = False) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _interval(low: float, high: float, digits: int = 3) -> str:
    return f"95% CI {number(low, digits)} to {number(high, digits)}"


def percent(rate: float, low: float, high: float) -> str:
    if not np.isfinite(rate):
        return "n/a"
    return f"{rate:.0%} (95% CI {low:.0%}-{high:.0%})"


def _names(values: pd.Series) -> str:
    return ", ".join(sorted(str(v) for v in values.dropna().unique())) or "none"


def overview(content: ReportContent) -> str:
    texts, runs = content.texts, content.runs
    broken = sum(run.broken for run in runs)
    return (
        f"Report over {content.root}: {texts['text_id'].nunique()} texts from "
        f"generators {_names(texts['generator'])}, "
        f"scored by {_names(texts['scorer'])}; "
        f"{len(runs)} runs, {broken} of them failed or broken. Log-likelihoods are "
        f"per UTF-8 byte ({NATS}), comparable across tokenizers."
    )


def main_findings(content: ReportContent) -> list[str]:
    lines = []
    overall = content.preferences[content.preferences["level"] == "overall"]
    for _, row in overall.iterrows():
        lines.append(
            f"{row['scorer']} gives the highest per-byte likelihood to "
            f"{percent(row['rate'], row['ci_low'], row['ci_high'])} of "
            f"{int(row['n'])} texts."
        )
    for _, row in content.self_preference.iterrows():
        lines.append(_self_preference_sentence(row))
    spearman = content.agreement[content.agreement["section"] == "spearman"]
    for _, row in spearman.iterrows():
        low, high = fisher_interval(row["value"], int(row["n"]))
        lines.append(
            f"Spearman rho between {row['selector']} and {row['judge']} on the "
            f"same texts: {number(row['value'], 2)} ({_interval(low, high, 2)}, "
            f"n={row['n']})."
        )
    lines += _best_of_n_sentences(content.agreement)
    return lines or [
        "Nothing to compare: these findings need texts scored by at least two scorers."
    ]


def _self_preference_sentence(row: pd.Series) -> str:
    numbers = (
        f"{number(row['estimate'], sign=True)} {NATS} "
        f"({_interval(row['ci_low'], row['ci_high'])}, {row['n_texts']} texts, "
        f"{row['n_prompts']} prompts)"
    )
    excludes_zero = row["ci_low"] > 0 or row["ci_high"] < 0
    if row["kind"] == "raw":
        side = "its own" if row["estimate"] > 0 else "other models'"
        hedge = "" if excludes_zero else " (the interval includes 0)"
        return (
            f"Self-bias of {row['model_a']}: {numbers}; it favours {side} text{hedge}."
        )
    if not excludes_zero:
        verdict = (
            "no evidence of self-preference beyond text difficulty and scorer strength"
        )
    elif row["estimate"] > 0:
        verdict = (
            "they favour their own text beyond text difficulty and scorer strength"
        )
    else:
        verdict = "they favour each other's text over their own"
    pair = f"{row['model_a']} and {row['model_b']}"
    return f"Adjusted self-preference of {pair}: {numbers}: {verdict}."


def _best_of_n_sentences(agreement: pd.DataFrame) -> list[str]:
    best = agreement[agreement["section"] == "best_of_n"]
    lines = []
    for judge, group in best.groupby("judge"):
        by_kind = group.set_index("selector")["value"]
        n = int(group["n"].max())
        if "consensus" not in by_kind:
            continue
        lines.append(
            f"Best-of-N judged by {judge} ({n} run-prompt groups): picking by "
            "consensus gives "
            f"{number(by_kind['consensus'])} {NATS}, a random pick "
            f"{number(by_kind.get('random', np.nan))}, the average sample "
            f"{number(by_kind.get('average', np.nan))}."
        )
    return lines


def key_insights(content: ReportContent) -> list[str]:
    """The notebook's insights: length, perplexity gap, self-bias direction."""
    lines = _length_insights(content.summary) + _gap_insights(content.summary)
    raw = content.self_preference[content.self_preference["kind"] == "raw"]
    for _, row in raw.iterrows():
        side = "its own" if row["estimate"] > 0 else "other models'"
        bias = number(row["estimate"], sign=True)
        lines.append(f"{row['model_a']} prefers {side} text (raw self-bias {bias}).")
    return lines or ["Too little data for these insights (two scorers needed)."]


def _length_insights(summary: pd.DataFrame) -> list[str]:
    lines = []
    for _, row in summary_rows(summary, "correlation", "spearman_length").iterrows():
        a, b, rho, n = row["scorer"], row["other"], row["value"], int(row["n"])
        low, high = fisher_interval(rho, n)
        numbers = f"Spearman rho {number(rho, 2)}, {_interval(low, high, 2)}, n={n}"
        if low > 0 or high < 0:
            side = "Longer" if rho > 0 else "Shorter"
            lines.append(
                f"{side} texts tend to be preferred by {b} over {a} ({numbers})."
            )
        else:
            lines.append(
                f"Text length has little correlation with {b}'s preference over {a} "
                f"({numbers})."
            )
    return lines


def _gap_insights(summary: pd.DataFrame) -> list[str]:
    pairs = summary[summary["section"] == "pair"]
    values = pairs.set_index(["scorer", "other", "metric"])["value"].unstack()
    counts = pairs.groupby(["scorer", "other"])["n"].max()
    ppl = summary_rows(summary, "scorer", "mean_perplexity")
    ppl = ppl.set_index("scorer")["value"]
    lines = []
    for (a, b), row in values.iterrows():
        interval = _interval(row["ratio_ci_low"], row["ratio_ci_high"])
        gap = row["mean_likelihood_ratio"]
        verdict = f"{b if gap > 0 else a} scores the same texts higher"
        if not (row["ratio_ci_low"] > 0 or row["ratio_ci_high"] < 0):
            verdict = f"{a} and {b} score the same texts about equally"
        lines.append(
            f"{verdict}: {b} minus {a} is "
            f"{number(gap, sign=True)} {NATS} ({interval}, n={counts[(a, b)]}); mean "
            f"perplexity per token: {a} {number(ppl.get(a, np.nan), 2)}, "
            f"{b} {number(ppl.get(b, np.nan), 2)} (per-token values depend on the "
            "tokenizer)."
        )
    return lines


def examples(content: ReportContent) -> list[tuple[str, str]]:
    """(title, text) pairs: the most controversial texts and each favourite."""
    info = text_info(content.texts)
    result = []
    for _, row in content.summary[content.summary["section"] == "example"].iterrows():
        value = f"{number(row['value'], sign=True)} {NATS}"
        if row["metric"] == "most_controversial":
            a, b = row["scorer"], row["other"]
            what = (
                f"Most controversial text between {a} and {b} ({b} minus {a}: {value})"
            )
        else:
            label = "Favourite" if row["metric"] == "favourite" else "Least favourite"
            what = f"{label} of {row['scorer']} ({value})"
        if row["generation_id"] in info.index:
            context = info.loc[row["generation_id"]]
            what += (
                f", generated by {context['generator']} ({context['sampler']} "
                f"sampling, T={temperature_label(context['temperature'])})"
            )
        title = f'{what}. Prompt: "{row["prompt"]}"'
        result.append((title, row["text"] or "(empty text)"))
    return result


def temperature_label(value: float) -> str:
    return "all" if pd.isna(value) else f"{value:g}"

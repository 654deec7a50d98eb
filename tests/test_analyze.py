"""analyze.summarize on synthetic runs, checked against hand computations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from synthetic import make_tables

from metagen.analyze import SUMMARY_COLUMNS, format_summary, summarize

# Per-byte LL by (prompt, sample) under each scorer; texts are 10, 15, 20, 25 bytes.
LL = {
    "small": {(0, 0): -1.0, (0, 1): -1.1, (1, 0): -1.3, (1, 1): -1.2},
    "medium": {(0, 0): -1.5, (0, 1): -1.0, (1, 0): -1.4, (1, 1): -1.6},
}
RATIO = [0.5, -0.1, 0.1, 0.4]  # small - medium, in (prompt, sample) order


def _text(p: int, k: int) -> str:
    return "x" * (10 + 10 * p + 5 * k)


def _tables(**options) -> tuple[pd.DataFrame, pd.DataFrame]:
    options = {"ll": lambda p, k, scorer: LL[scorer][(p, k)], "text": _text} | options
    return make_tables("small", **options)


def _value(summary: pd.DataFrame, section: str, metric: str, scorer: str = "") -> float:
    rows = summary[(summary["section"] == section) & (summary["metric"] == metric)]
    if scorer:
        rows = rows[rows["scorer"] == scorer]
    assert len(rows) == 1, (section, metric, scorer)
    return rows["value"].item()


def test_per_scorer_means_and_throughput_match_hand_values():
    generations, scores = _tables()
    summary = summarize(generations, scores)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert _value(summary, "scorer", "mean_ll_per_byte", "small") == pytest.approx(
        -1.15
    )
    assert _value(summary, "scorer", "median_ll_per_byte", "medium") == pytest.approx(
        -1.45
    )
    bits = _value(summary, "scorer", "mean_bits_per_byte", "small")
    assert bits == pytest.approx(1.15 / math.log(2))
    # make_tables: n_tokens = n_bytes // 3, perplexity = exp(-ll * n_bytes / n_tokens)
    ppl = [
        math.exp(-ll * n / (n // 3))
        for ll, n in zip(LL["small"].values(), (10, 15, 20, 25), strict=True)
    ]
    assert _value(summary, "scorer", "mean_perplexity", "small") == pytest.approx(
        np.mean(ppl)
    )
    # n_new_tokens = n_bytes // 4 = 2+3+5+6; gen_seconds = 0.5+0.55+0.6+0.65
    assert _value(summary, "throughput", "tokens_per_second") == pytest.approx(16 / 2.3)


def test_preferences_ratios_and_correlations_match_hand_values():
    summary = summarize(*_tables())
    assert _value(summary, "preference", "preferred_texts", "small") == 3
    assert _value(summary, "preference", "preference_rate", "medium") == 0.25
    # Pairs are ordered by name: (medium, small), ratio = small - medium.
    assert _value(summary, "pair", "mean_likelihood_ratio", "medium") == pytest.approx(
        0.225
    )
    assert _value(summary, "pair", "median_likelihood_ratio") == pytest.approx(0.25)
    assert _value(summary, "pair", "other_preferred_rate") == 0.75
    # Ranks of the ratio [4, 1, 2, 3] vs length [1, 2, 3, 4]: 1 - 6*12/60 = -0.2
    assert _value(summary, "correlation", "spearman_length") == pytest.approx(-0.2)
    pearson = scipy_stats.pearsonr([10, 15, 20, 25], RATIO)[0]
    assert _value(summary, "correlation", "pearson_length") == pytest.approx(pearson)
    assert _value(summary, "correlation", "spearman_gen_seconds") == pytest.approx(-0.2)


def test_examples_name_the_texts():
    summary = summarize(*_tables()).set_index(["metric", "scorer"])
    controversial = summary.loc[("most_controversial", "medium")]
    assert controversial["value"] == pytest.approx(0.5)
    assert controversial["text"] == _text(0, 0) and controversial["other"] == "small"
    assert summary.loc[("favourite", "medium"), "text"] == _text(0, 1)
    assert summary.loc[("least_favourite", "medium"), "text"] == _text(1, 1)
    assert summary.loc[("least_favourite", "small"), "value"] == pytest.approx(-1.3)
    assert summary.loc[("favourite", "small"), "prompt"] == "The ocean is"


def test_self_consistency_of_the_generator_scoring_itself():
    generations, scores = _tables()
    own = scores.index[scores["scorer"] == "small"]
    scores.loc[own[0], "retokenized_same"] = False
    summary = summarize(generations, scores)
    assert _value(summary, "self_consistency", "retokenized_changed_rate") == 0.25
    # make_tables records gen_logprob_sum = own logprob_sum + 0.25
    assert _value(summary, "self_consistency", "mean_abs_logprob_gap") == pytest.approx(
        0.25
    )
    assert set(summary.loc[summary["section"] == "self_consistency", "scorer"]) == {
        "small"
    }


def test_a_single_scorer_has_means_and_examples_but_no_pairs():
    summary = summarize(*_tables(scorers=["small"]))
    assert set(summary["section"]) == {
        "throughput",
        "scorer",
        "example",
        "self_consistency",
    }
    assert _value(summary, "scorer", "mean_ll_per_byte", "small") == pytest.approx(
        -1.15
    )


def test_an_empty_text_is_counted_but_not_scored():
    text = lambda p, k: "" if (p, k) == (0, 0) else _text(p, k)  # noqa: E731
    generations, scores = _tables(text=text)
    summary = summarize(generations, scores)
    assert _value(summary, "scorer", "unscored_texts", "small") == 1
    assert _value(summary, "scorer", "mean_ll_per_byte", "small") == pytest.approx(
        -3.6 / 3
    )
    assert _value(summary, "preference", "preferred_texts", "small") == 2
    assert _value(summary, "pair", "mean_likelihood_ratio") == pytest.approx(0.4 / 3)
    assert _value(summary, "throughput", "empty_texts") == 1


def test_summary_is_parquet_ready_and_prints(tmp_path: Path):
    summary = summarize(*_tables())
    summary.to_parquet(tmp_path / "summary.parquet")
    back = pd.read_parquet(tmp_path / "summary.parquet")
    assert back["value"].dtype == "float64" and back["n"].dtype == "int64"
    text = format_summary(summary)
    assert "small: perplexity" in text and "bits/byte" in text
    assert "small gives the highest per-byte likelihood to 3 of 4 texts" in text
    assert "Most controversial (small - medium = +0.500 nats/byte)" in text
    assert f"{16 / 2.3:.1f} tokens/s" in text


def test_no_scores_still_summarizes_throughput():
    generations, scores = _tables()
    summary = summarize(generations, scores.iloc[0:0])
    assert set(summary["section"]) == {"throughput"}


def test_a_correlation_with_a_constant_side_prints_as_undefined():
    generations, scores = _tables()
    generations["gen_seconds"] = 0.5  # one batch: every row shares its time
    text = format_summary(summarize(generations, scores))
    assert "Spearman gen_seconds vs ratio (small - medium): undefined (n=4)" in text
    assert "nan" not in text

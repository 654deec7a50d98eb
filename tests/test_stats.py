"""Report statistics against hand computations and constructed known answers."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from metagen.report import intervals, stats

Record = tuple[str, int, int, str, float]  # generator, prompt, sample, scorer, ll


def make_texts(records: Iterable[Record], temperature: float = 0.8) -> pd.DataFrame:
    """The texts table for per-byte LLs given as (generator, prompt, sample, scorer).

    Each generator is its own run; every text is 10 bytes long.
    """
    rows = [
        {
            "run_dir": generator, "generation_id": f"{generator}-{prompt}-{sample}",
            "scorer": scorer, "generator": generator, "sampler": "temperature",
            "temperature": temperature, "prompt_set": "set", "prompt_id": prompt,
            "n_bytes": 10, "logprob_sum": 10 * ll, "perplexity": float(np.exp(-ll)),
        }
        for generator, prompt, sample, scorer, ll in records
    ]  # fmt: skip
    scores = pd.DataFrame(rows)
    generations = scores.drop_duplicates("generation_id").assign(
        prompt=lambda frame: "prompt " + frame["prompt_id"].astype(str), text="t"
    )
    return stats.scored_texts(generations, scores)


def additive_records(interaction: float, noise: float = 0.0, seed: int = 1):
    """LL = text difficulty + scorer strength (+ interaction on the diagonal)."""
    rng = np.random.default_rng(seed)
    strength = {"a": -1.0, "b": -0.6}
    difficulty = {}
    records = []
    for generator in ("a", "b"):
        for prompt in range(8):
            for sample in range(3):
                d = rng.normal(0, 0.5)
                difficulty[(generator, prompt, sample)] = d
                for scorer in ("a", "b"):
                    value = d + strength[scorer] + rng.normal(0, noise)
                    value += interaction * (scorer == generator)
                    records.append((generator, prompt, sample, scorer, value))
    return records, difficulty


def test_interaction_contrast_recovers_a_known_self_preference():
    records, difficulty = additive_records(interaction=0.3)
    table = stats.self_preference(make_texts(records)).set_index(["kind", "model_a"])
    adjusted = table.loc[("adjusted", "a")]
    # M[a,a] + M[b,b] - M[a,b] - M[b,a]: difficulty and strength cancel.
    assert adjusted["estimate"] == pytest.approx(0.6, abs=1e-9)
    assert adjusted["ci_low"] - 1e-9 <= 0.6 <= adjusted["ci_high"] + 1e-9
    assert (adjusted["n_texts"], adjusted["n_prompts"]) == (48, 8)
    # Raw self-bias of a: M[a,a] - M[a,b] keeps the generators' text difficulty.
    mean_d = {g: np.mean([v for k, v in difficulty.items() if k[0] == g]) for g in "ab"}
    raw = table.loc[("raw", "a")]
    assert raw["estimate"] == pytest.approx(0.3 + mean_d["a"] - mean_d["b"], abs=1e-9)


def test_no_interaction_gives_an_interval_covering_zero():
    records, _ = additive_records(interaction=0.0, noise=0.05)
    table = stats.self_preference(make_texts(records))
    adjusted = table[table["kind"] == "adjusted"].iloc[0]
    assert adjusted["ci_low"] < 0 < adjusted["ci_high"]
    assert abs(adjusted["estimate"]) < 0.05


def test_raw_self_bias_matches_hand_computation():
    # Scorer a on: its own texts -1.0, -2.0; b's texts -3.0; c's texts -1.5, -2.5.
    records = [
        ("a", 0, 0, "a", -1.0), ("a", 1, 0, "a", -2.0), ("b", 0, 0, "a", -3.0),
        ("c", 0, 0, "a", -1.5), ("c", 1, 0, "a", -2.5),
    ]  # fmt: skip
    table = stats.self_preference(make_texts(records), n_boot=200)
    row = table[table["kind"] == "raw"].iloc[0]
    # M[a,a] = -1.5, M[a,b] = -3.0, M[a,c] = -2.0: -1.5 - (-3.0 + -2.0) / 2 = 1.0
    assert row["model_a"] == "a" and row["estimate"] == pytest.approx(1.0)
    assert (row["n_texts"], row["n_prompts"]) == (5, 2)
    assert len(table) == 1  # b and c never score, so no pair is estimable


def test_bootstrap_resamples_whole_prompts():
    # The contrast is 0 on every text of prompt 0 and 1 on every text of
    # prompt 1. Resampling the two prompts can only give 0, 0.5 or 1; resampling
    # texts would concentrate near 0.5.
    records = []
    for sample in range(20):
        for prompt, gap in ((0, 0.0), (1, 1.0)):
            records += [
                ("a", prompt, sample, "a", -1.0 + gap),
                ("a", prompt, sample, "b", -1.0),
            ]
            records += [
                ("b", prompt, sample, "a", -1.0),
                ("b", prompt, sample, "b", -1.0),
            ]
    row = stats.self_preference(make_texts(records)).query("kind == 'adjusted'")
    assert row["estimate"].iloc[0] == pytest.approx(0.5)
    assert (row["ci_low"].iloc[0], row["ci_high"].iloc[0]) == (0.0, 1.0)


def test_score_matrix_means_by_scorer_generator_and_sampler():
    records = [("a", 0, 0, "a", -1.0), ("a", 1, 0, "a", -2.0), ("a", 0, 0, "b", -4.0)]
    matrix = stats.score_matrix(make_texts(records))
    pooled = matrix[matrix["sampler"] == "all"].set_index(["scorer", "generator"])
    assert pooled.loc[("a", "a"), "mean_ll_per_byte"] == pytest.approx(-1.5)
    assert pooled.loc[("b", "a"), "n"] == 1
    assert set(matrix["sampler"]) == {"all", "temperature"}


def test_preference_rates_and_wilson_interval_match_hand_values():
    # a beats b on 3 of 5 texts; a sixth text scored by a alone does not count.
    lls = [(-1, -2), (-1, -3), (-2, -4), (-3, -1), (-4, -2)]
    records = [("g", i, 0, "a", la) for i, (la, _) in enumerate(lls)]
    records += [("g", i, 0, "b", lb) for i, (_, lb) in enumerate(lls)]
    records.append(("g", 9, 0, "a", -0.1))
    rates = stats.preference_rates(make_texts(records), ["generator"])
    a = rates.set_index("scorer").loc["a"]
    assert (a["n_preferred"], a["n"], a["rate"]) == (3, 5, 0.6)
    # Wilson 95% for 3/5, computed by hand: (0.23072, 0.88238).
    assert a["ci_low"] == pytest.approx(0.2307243, abs=1e-6)
    assert a["ci_high"] == pytest.approx(0.8823792, abs=1e-6)
    overall = stats.preference_table(make_texts(records))
    assert overall.query("level == 'overall' and scorer == 'b'")["rate"].item() == 0.4


def test_spearman_agreement_matches_hand_and_scipy():
    a = [-1.0, -2.0, -3.0, -4.0, -5.0]
    b = [-2.0, -1.0, -4.0, -3.0, -5.0]  # rank differences 1,1,1,1,0: rho = 0.8
    records = [("g", i, 0, "a", x) for i, x in enumerate(a)]
    records += [("g", i, 0, "b", y) for i, y in enumerate(b)]
    table = stats.agreement(make_texts(records))
    row = table[table["section"] == "spearman"].iloc[0]
    assert row["value"] == pytest.approx(0.8)
    assert row["value"] == pytest.approx(scipy_stats.spearmanr(a, b).statistic)
    assert row["n"] == 5


def test_best_of_n_picks_match_hand_computation():
    samples = {  # (prompt, sample): (ll under a, ll under b)
        (0, 0): (-1.0, -2.0), (0, 1): (-1.2, -1.0),
        (1, 0): (-3.0, -2.0), (1, 1): (-2.0, -3.0),
        (2, 0): (-9.0, 5.0),  # one sample only: no choice, and left out of z
    }  # fmt: skip
    records = [("g", p, k, "a", la) for (p, k), (la, _) in samples.items()]
    records += [("g", p, k, "b", lb) for (p, k), (_, lb) in samples.items()]
    table = stats.best_of_n(make_texts(records))
    value = table.set_index(["selector", "judge"])["value"]
    # z_a = [0.8, 0.6, -1.2, -0.2] / 0.7874, z_b = [0, 1, 0, -1] / 0.7071;
    # consensus picks (0, 1) and (1, 0).
    assert value[("consensus", "a")] == pytest.approx((-1.2 - 3.0) / 2)
    assert value[("consensus", "b")] == pytest.approx((-1.0 - 2.0) / 2)
    assert value[("a", "b")] == pytest.approx((-2.0 - 3.0) / 2)  # a picks (0,0), (1,1)
    assert value[("b", "a")] == pytest.approx((-1.2 - 3.0) / 2)  # b picks (0,1), (1,0)
    assert ("a", "a") not in value.index
    assert value[("average", "a")] == pytest.approx(-1.8)
    assert set(table["n"]) == {2}
    random = value[("random", "a")]
    assert random in {(x + y) / 2 for x in (-1.0, -1.2) for y in (-3.0, -2.0)}
    assert stats.best_of_n(make_texts(records)).equals(table)  # seeded


def test_fisher_interval_matches_hand_value():
    low, high = intervals.fisher_interval(0.5, 28)  # tanh(atanh(0.5) -/+ 1.96 / 5)
    assert (low, high) == pytest.approx((0.156028, 0.735818), abs=1e-5)
    assert np.isnan(intervals.fisher_interval(0.5, 3)[0])


def test_scored_texts_joins_prompts_and_leaves_empty_texts_unscored():
    scores = pd.DataFrame(
        {
            "generation_id": ["g1", "g2", "g3"], "scorer": "a", "generator": "a",
            "prompt_set": "s", "prompt_id": [0, 1, 2], "n_bytes": [4, 0, 2],
            "logprob_sum": [-2.0, 0.0, -1.0],
        }
    )  # fmt: skip
    generations = pd.DataFrame(
        {"generation_id": ["g1", "g2"], "prompt": ["P0", "P1"], "text": ["abcd", ""]}
    )
    texts = stats.scored_texts(generations, scores)
    assert texts["ll_per_byte"].tolist()[0] == -0.5 and np.isnan(
        texts["ll_per_byte"][1]
    )
    assert texts["prompt"].tolist() == ["P0", "P1", "prompt #2"]
    assert texts["text_id"].tolist() == ["./g1", "./g2", "./g3"]

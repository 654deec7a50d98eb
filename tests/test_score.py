"""Scoring: checked against a plain one-text-at-a-time transformers computation."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import reference_logprob_sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metagen.likelihood import score_texts, split_pair

PAIRS = [
    ("The scientific method involves", " careful observation and testing."),
    ("In the depths of the ocean ", "lives a creature — naïve, ünïcode ✓ 深海."),
    ("Democracy requires", "\n\nA free press.  Two  spaces."),
    ("Artificial intelligence will", " be"),
]


@pytest.mark.parametrize("model", ["small", "medium"])
def test_logprob_sum_matches_plain_transformers(models, model):
    lm = models[model]
    rows = score_texts(lm, PAIRS, 16)
    for (prompt, text), row in zip(PAIRS, rows):
        expected, n = reference_logprob_sum(lm, prompt, text)
        assert row["n_tokens"] == n
        assert abs(row["logprob_sum"] - expected) <= 1e-4 * n
        assert row["mean_logprob"] == pytest.approx(expected / n, abs=1e-4)


@pytest.mark.parametrize("model", ["small", "medium"])
def test_batch_size_does_not_change_scores(models, model):
    lm = models[model]
    one, many = score_texts(lm, PAIRS, 1), score_texts(lm, PAIRS, 16)
    for a, b in zip(one, many):
        assert abs(a["logprob_sum"] - b["logprob_sum"]) <= 1e-4 * a["n_tokens"]
        assert a["seq_mean_logprob"] == pytest.approx(b["seq_mean_logprob"], abs=1e-4)


def test_metric_identities(models):
    for (prompt, text), row in zip(PAIRS, score_texts(models["small"], PAIRS, 16)):
        scored = split_pair(prompt, text)[1]
        assert row["n_bytes"] == len(scored.encode("utf-8"))
        assert row["n_chars"] == len(scored)
        assert row["bits_per_byte"] == pytest.approx(
            -row["logprob_sum"] / (row["n_bytes"] * math.log(2)), rel=1e-12
        )
        assert row["perplexity"] == pytest.approx(math.exp(-row["mean_logprob"]))
        assert row["cross_entropy"] == pytest.approx(-row["mean_logprob"])
        lp = row["token_logprobs"]
        assert len(lp) == row["n_tokens"]
        assert row["mean_token_prob"] == pytest.approx(
            sum(math.exp(x) for x in lp) / len(lp), rel=1e-5
        )
        assert 0 <= row["greedy_match_frac"] <= 1 and row["mean_entropy"] >= 0


def test_seq_mean_logprob_is_the_notebooks_loss(models):
    lm = models["medium"]
    for (prompt, text), row in zip(PAIRS, score_texts(lm, PAIRS, 16)):
        ids = torch.tensor([lm.tokenizer.encode(prompt + " " + text.strip())])
        with torch.no_grad():
            loss = float(lm.model(ids, labels=ids).loss)
        assert row["seq_mean_logprob"] == pytest.approx(-loss, abs=1e-4)
        assert row["seq_perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)


def test_empty_continuation_is_scored_as_empty(models):
    (row,) = score_texts(models["small"], [("Hello", "")], 4)
    assert row["n_tokens"] == 0 and row["n_bytes"] == 0 and row["logprob_sum"] == 0
    for name in ("mean_logprob", "perplexity", "bits_per_byte", "greedy_match_frac"):
        assert math.isnan(row[name])


def test_too_long_prompt_is_cut_from_the_left_and_flagged(models):
    lm = models["tiny"]  # context 256 tokens
    long_prompt = "word " * 1000
    rows = score_texts(lm, [(long_prompt, " end of the text."), ("Hi", " ok")], 4)
    assert rows[0]["truncated"] and not rows[1]["truncated"]
    assert rows[0]["n_tokens"] == rows[1]["n_tokens"] + 1 or rows[0]["n_tokens"] > 0
    assert math.isfinite(rows[0]["logprob_sum"])
    too_long_text = "token " * 1000
    (row,) = score_texts(lm, [("Hi", too_long_text)], 4)
    assert row["truncated"] and row["n_tokens"] == lm.context_length - 1


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    prompt=st.text(min_size=1, max_size=20).filter(lambda s: s.strip() == s),
    text=st.text(max_size=30),
)
def test_random_strings_give_finite_nonpositive_logprobs(models, prompt, text):
    (row,) = score_texts(models["small"], [(prompt, text)], 2)
    assert row["n_bytes"] == len(text.encode("utf-8"))
    assert all(math.isfinite(x) and x <= 0 for x in row["token_logprobs"])

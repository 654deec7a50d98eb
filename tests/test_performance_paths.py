"""The fast paths stay correct: packed linears, one-pass scoring, bfloat16,
automatic batches, the token draw."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config

from metagen.batching import run_in_batches
from metagen.config import DeviceConfig
from metagen.likelihood import (
    score_requests,
    score_texts,
    scoring_requests,
    shares_pass,
)
from metagen.models import load_model
from metagen.packed import PackedLinear, pack_linears, plain_linears
from metagen.sampling import _draw

PAIRS = [
    ("The scientific method involves", " careful observation and testing."),
    ("In the depths of the ocean", " lives a creature with luminous fins."),
    ("Democracy requires", " a free press and honest elections."),
]


def test_bfloat16_scoring_stays_within_its_tolerance(models):
    bf16 = load_model(
        compose_config(["model=small"]).model,
        DeviceConfig(name="cpu", device="cpu", dtype="bfloat16"),
    )
    exact = score_texts(models["small"], PAIRS, 16)
    rough = score_texts(bf16, PAIRS, 16)
    diffs = [abs(a["bits_per_byte"] - b["bits_per_byte"]) for a, b in zip(exact, rough)]
    assert sum(diffs) / len(diffs) <= 0.01  # the benchmark's bf16_bpb_abs_diff target
    for a, b in zip(exact, rough):
        assert a["n_tokens"] == b["n_tokens"]
        assert all(math.isfinite(x) and x <= 0 for x in b["token_logprobs"])


def test_automatic_batch_size_gives_the_same_scores(models):
    fixed, auto = (
        score_texts(models["tiny"], PAIRS, 2),
        score_texts(models["tiny"], PAIRS, None),
    )
    for a, b in zip(fixed, auto):
        assert b["logprob_sum"] == pytest.approx(a["logprob_sum"], abs=1e-4)


def test_out_of_memory_halves_the_batch_and_keeps_every_row():
    sizes = []

    def run(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [i * 10 for i in batch]

    rows = run_in_batches([5, 3, 8, 1, 4, 4, 7], None, run)
    assert rows == [0, 10, 20, 30, 40, 50, 60]
    assert sizes[0] == 7 and max(sizes[1:]) <= 3 and sizes[-1] <= 2


def test_fixed_batch_size_does_not_hide_out_of_memory():
    def run(batch: list[int]) -> list[int]:
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_in_batches([1, 2, 3], 2, run)


def test_token_draw_follows_the_softmax_distribution():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1] + [1e-9] * 3000))
    draws = _draw(logits.repeat(20000, 1))
    counts = torch.bincount(draws, minlength=4)[:4].double() / len(draws)
    expected = torch.tensor([0.5, 0.25, 0.15, 0.1], dtype=torch.float64)
    assert torch.allclose(counts, expected, atol=0.015)
    assert int(draws.max()) < 4 or (draws >= 4).double().mean() < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_computes_what_torch_does(dtype):
    layer = torch.nn.Linear(64, 96).to(dtype)
    wrapper = torch.nn.Sequential(layer)
    # The pinned x86 CPU build of torch ships oneDNN: packing must happen here.
    assert pack_linears(wrapper) == 1 and isinstance(wrapper[0], PackedLinear)
    for rows in (1, 5, 300):
        x = torch.randn(rows, 64, dtype=dtype)
        with torch.inference_mode():
            got = wrapper(x)
        want = torch.nn.functional.linear(x, layer.weight, layer.bias)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("model", ["small", "medium"])
def test_packed_model_matches_pytorchs_own_kernels(models, model):
    """Every linear of the loaded model is packed, and the logits agree with the
    same model on PyTorch's kernels."""
    lm = models[model]
    assert not any(type(m) is torch.nn.Linear for m in lm.model.modules())
    assert lm.model.get_output_embeddings().blocks  # the head, for scoring
    ids = torch.tensor([lm.tokenizer.encode("The tide comes in, and the gulls")])
    with torch.inference_mode():
        packed = lm.model(ids).logits.float()
        with plain_linears(lm.model):
            plain = lm.model(ids).logits.float()
    assert (packed - plain).abs().max().item() < 1e-3
    assert torch.equal(packed.argmax(-1), plain.argmax(-1))
    scored = score_texts(lm, PAIRS, 16)
    with plain_linears(lm.model):  # the vocabulary blocks too
        for a, b in zip(scored, score_texts(lm, PAIRS, 16)):
            assert a["logprob_sum"] == pytest.approx(b["logprob_sum"], abs=1e-3)
            assert a["mean_entropy"] == pytest.approx(b["mean_entropy"], abs=1e-4)


def test_a_weight_changed_after_packing_is_not_served_stale():
    layer = torch.nn.Linear(32, 48)
    wrapper = torch.nn.Sequential(layer)
    assert pack_linears(wrapper) == 1
    x = torch.randn(4, 32)
    with torch.no_grad():
        layer.weight.mul_(2.0)  # in place, after packing
    with torch.inference_mode():
        got = wrapper(x)
    want = torch.nn.functional.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(got, want)


def test_plain_linears_nests():
    wrapper = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    assert pack_linears(wrapper) == 2
    with plain_linears(wrapper):
        with plain_linears(wrapper):
            pass
        assert not any(layer.enabled for layer in wrapper)
    assert all(layer.enabled for layer in wrapper)


def test_one_pass_serves_both_metric_families(models):
    """A text that starts with one space and ends without whitespace is scored in
    one pass; others take a second pass for the notebook metrics: both give the
    same numbers as scoring each kind on its own."""
    lm = models["small"]
    pairs = [*PAIRS, ("The storm", "\n\nthe harbour emptied "), ("A", "")]
    plan = scoring_requests(lm, pairs)
    assert plan.shared == [True, True, True, False, False]
    assert plan.shared == [shares_pass(m, n) for m, n in zip(plan.main, plan.notebook)]
    assert len(plan.run) == len(pairs) + 2
    rows = score_texts(lm, pairs, 16)
    alone = score_requests(lm, plan.main + plan.notebook, 1)
    for k, row in enumerate(rows):
        assert row["logprob_sum"] == pytest.approx(
            alone[k].logprobs.sum(), abs=1e-4 * max(row["n_tokens"], 1)
        )
        whole = alone[len(pairs) + k].logprobs
        if len(whole):
            assert row["seq_mean_logprob"] == pytest.approx(whole.mean(), abs=1e-4)


def test_no_packing_where_the_copies_would_not_fit(monkeypatch):
    monkeypatch.setattr("metagen.packed.free_memory", lambda: 1000)
    wrapper = torch.nn.Sequential(torch.nn.Linear(64, 96))
    assert pack_linears(wrapper) == 0 and type(wrapper[0]) is torch.nn.Linear

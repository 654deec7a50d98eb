"""Generate stage: every sampler, exact continuations, raw log-probs, determinism."""

from __future__ import annotations

import pytest
import torch
from conftest import CONF, compose_config

from metagen.generate import continuation_text, generate, prompt_token_ids

QUICK = compose_config(["prompts=quick"]).prompts.prompts
SAMPLERS = sorted(p.stem for p in (CONF / "sampler").glob("*.yaml"))


def sampler(name: str, *overrides: str):
    return compose_config([f"sampler={name}", *overrides]).sampler


@pytest.mark.parametrize("model", ["tiny", "small"])
@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_generates(models, model, name):
    lm = models[model]
    rows = generate(lm, QUICK, sampler(name, "sampler.max_new_tokens=8"), 0, 16)
    assert [r.prompt_id for r in rows] == [0, 1, 2]
    for row, prompt in zip(rows, QUICK):
        assert 0 <= len(row.token_ids) <= 8
        assert row.finish_reason == ("length" if len(row.token_ids) == 8 else "eos")
        # prompt + text reproduces the decoded whole sequence exactly
        whole = lm.tokenizer.decode(
            prompt_token_ids(lm, prompt) + row.token_ids, skip_special_tokens=True
        )
        assert prompt + row.text == whole
        assert row.logprob_sum <= 0


def test_greedy_equals_a_hand_written_argmax_loop(models):
    lm = models["tiny"]
    rows = generate(lm, QUICK, sampler("greedy", "sampler.max_new_tokens=12"), 0, 16)
    for row, prompt in zip(rows, QUICK):
        ids = prompt_token_ids(lm, prompt)
        with torch.no_grad():
            for _ in range(12):
                next_id = int(lm.model(torch.tensor([ids])).logits[0, -1].argmax())
                if next_id == lm.tokenizer.eos_token_id:
                    break
                ids.append(next_id)
        assert row.token_ids == ids[len(prompt_token_ids(lm, prompt)) :]


@pytest.mark.parametrize("model", ["tiny", "small"])
@pytest.mark.parametrize("name", ["temperature", "top_p", "beam"])
def test_gen_logprob_equals_one_full_forward_pass(models, model, name):
    lm = models[model]
    rows = generate(lm, QUICK, sampler(name, "sampler.max_new_tokens=10"), 3, 16)
    for row, prompt in zip(rows, QUICK):
        ids = prompt_token_ids(lm, prompt)
        full = torch.tensor([ids + row.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(full).logits[0].double(), -1)
        expected = sum(
            float(logp[len(ids) - 1 + i, t]) for i, t in enumerate(row.token_ids)
        )
        assert row.logprob_sum == pytest.approx(expected, abs=1e-3)


def test_same_seed_same_samples_other_seed_other_samples(models):
    lm, s = models["small"], sampler("temperature", "sampler.max_new_tokens=10")
    first = [r.token_ids for r in generate(lm, QUICK, s, 7, 16)]
    again = [r.token_ids for r in generate(lm, QUICK, s, 7, 16)]
    other = [r.token_ids for r in generate(lm, QUICK, s, 8, 16)]
    assert first == again
    assert first != other


def test_num_samples_gives_distinct_sample_indices(models):
    rows = generate(
        models["tiny"],
        QUICK[:2],
        sampler("temperature", "sampler.num_samples=4", "sampler.max_new_tokens=4"),
        0,
        3,
    )
    assert [(r.prompt_id, r.sample_index) for r in rows] == [
        (p, s) for p in range(2) for s in range(4)
    ]


def test_immediate_eos_is_kept_and_flagged(models):
    lm = models["tiny"]
    s = sampler("greedy", "sampler.max_new_tokens=5")
    first = generate(lm, QUICK[:1], s, 0, 1)[0].token_ids[0]
    # Declare the token greedy picks first to be EOS: the continuation is empty.
    saved = lm.tokenizer.eos_token
    lm.tokenizer.eos_token = lm.tokenizer.convert_ids_to_tokens(first)
    try:
        rows = generate(lm, QUICK[:1], s, 0, 1)
    finally:
        lm.tokenizer.eos_token = saved
    assert rows[0].text == "" and rows[0].token_ids == []
    assert rows[0].finish_reason == "eos" and rows[0].logprob_sum == 0.0


def test_continuation_text_survives_tokens_that_merge_with_the_prompt(models):
    lm = models["medium"]
    prompt = prompt_token_ids(lm, "Hello")
    new = lm.tokenizer.encode(" world, ünïcode ✓", add_special_tokens=False)
    assert continuation_text(lm, prompt, new) == " world, ünïcode ✓"

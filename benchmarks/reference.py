"""The original notebook's loop, batch 1 throughout: the baseline metagen is timed
against.

For each prompt, each generator and each sampler: generate one continuation alone,
then score prompt + " " + text with every scorer, one text at a time, with a full
forward pass that returns logits over the whole sequence and the loss (as the
notebook does). Kept out of the package on purpose: it is the slow way.

It is written afresh, not copied: it keeps the notebook's cost (batch 1, full-sequence
logits, loss, log-softmax over every position) but not its defects (no blanket except,
no dropped empty generations, no character-count slicing), so both sides of the
benchmark do the same amount of useful work.
"""

from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F

from metagen.config import SamplerConfig
from metagen.generate import generation_config
from metagen.models import LanguageModel
from metagen.packed import plain_linears


@torch.no_grad()
def generate_one(lm: LanguageModel, prompt: str, sampler: SamplerConfig) -> str:
    """One continuation of one prompt, the notebook's way (batch 1, no log-probs)."""
    config = generation_config(sampler, lm)
    config.return_dict_in_generate = False  # the notebook kept only the sequences
    ids = lm.tokenizer.encode(prompt, return_tensors="pt").to(lm.device)
    out = lm.model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config
    )
    return lm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@torch.no_grad()
def likelihood_metrics(lm: LanguageModel, text: str) -> dict[str, float]:
    """The notebook's per-text metrics: logits for every position, loss, log-softmax."""
    ids = torch.tensor([lm.tokenizer.encode(text)[: lm.context_length]]).to(lm.device)
    if ids.shape[1] <= 1:
        return dict(likelihood=float("-inf"), perplexity=float("inf"), token_count=0)
    out = lm.model(ids, labels=ids)
    logp = F.log_softmax(out.logits[0, :-1].float(), dim=-1)
    token_logp = logp.gather(1, ids[0, 1:].unsqueeze(1)).squeeze(1)
    return dict(
        likelihood=token_logp.mean().item(),
        perplexity=torch.exp(out.loss).item(),
        cross_entropy=out.loss.item(),
        token_count=int(ids.shape[1] - 1),
        avg_token_prob=token_logp.exp().mean().item(),
    )


def reference_cell(
    generator: LanguageModel,
    sampler: SamplerConfig,
    prompts: list[str],
    scorers: list[LanguageModel],
    seed: int,
) -> tuple[list[dict], dict[str, float]]:
    """One (generator, sampler) cell of the grid: every prompt generated and scored.

    Returns the rows and the seconds spent generating and scoring.
    """
    torch.manual_seed(seed)
    rows, seconds = [], dict(generate=0.0, score=0.0)
    with contextlib.ExitStack() as plain:  # the notebook ran PyTorch's own kernels
        for lm in {id(m): m for m in [generator, *scorers]}.values():
            plain.enter_context(plain_linears(lm.model))
        _each_prompt(generator, sampler, prompts, scorers, rows, seconds)
    return rows, seconds


def _each_prompt(generator, sampler, prompts, scorers, rows, seconds) -> None:
    for prompt in prompts:
        start = time.perf_counter()
        text = generate_one(generator, prompt, sampler)
        seconds["generate"] += time.perf_counter() - start
        full = prompt + " " + text.strip()  # the notebook stripped its generations
        row = dict(prompt=prompt, text=text, generator=generator.name)
        start = time.perf_counter()
        for scorer in scorers:
            row[scorer.name] = likelihood_metrics(scorer, full)
        seconds["score"] += time.perf_counter() - start
        rows.append(row)

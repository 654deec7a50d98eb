"""Generate stage: every prompt x sample continued by the generator, batched."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import GenerationConfig

from metagen.batching import run_in_batches
from metagen.config import SamplerConfig
from metagen.errors import UserError
from metagen.likelihood import Request, score_batch
from metagen.models import LanguageModel
from metagen.sampling import sample

log = logging.getLogger(__name__)


@dataclass
class Continuation:
    prompt_id: int
    sample_index: int
    text: str
    token_ids: list[int]
    finish_reason: str  # "eos" | "length"
    logprob_sum: float  # under the raw, untempered, unfiltered distribution
    seconds: float


def check_sampler(s: SamplerConfig) -> None:
    """Reject values the samplers would misread or silently clamp."""
    rules = [
        ("temperature", s.do_sample and s.temperature <= 0,
         "must be > 0 when sampling (sampler=greedy decodes deterministically)"),
        ("top_p", not 0 < s.top_p <= 1, "must be in (0, 1]; 1.0 turns it off"),
        ("top_k", s.top_k < 0, "must be >= 0; 0 turns it off"),
        ("min_p", not 0 <= s.min_p <= 1, "must be in [0, 1]; 0 turns it off"),
        ("typical_p", not 0 < s.typical_p <= 1, "must be in (0, 1]; 1.0 turns it off"),
        ("epsilon_cutoff", not 0 <= s.epsilon_cutoff < 1,
         "must be in [0, 1); 0 turns it off"),
        ("eta_cutoff", not 0 <= s.eta_cutoff < 1, "must be in [0, 1); 0 turns it off"),
        ("max_new_tokens", s.max_new_tokens <= 0, "must be > 0"),
        ("num_samples", s.num_samples <= 0, "must be > 0"),
        ("num_beams", s.num_beams < 1, "must be >= 1"),
        ("repetition_penalty", s.repetition_penalty <= 0,
         "must be > 0; 1.0 turns it off"),
    ]  # fmt: skip
    for name, bad, rule in rules:
        if bad:
            # The value is in the message: in a sweep it tells the jobs apart.
            raise UserError(f"sampler.{name}={getattr(s, name)}: {name} {rule}")


def check_prompt_lengths(lm: LanguageModel, encoded: list[list[int]], new: int):
    """Past its context a model crashes (GPT-2: IndexError) or writes noise."""
    room = lm.context_length - new
    for number, ids in enumerate(encoded, start=1):
        if len(ids) > room:
            raise UserError(
                f"prompt {number} of {len(encoded)} is {len(ids)} tokens, but "
                f"{lm.name} holds {lm.context_length} tokens including "
                f"sampler.max_new_tokens={new}; shorten the prompt or lower "
                "sampler.max_new_tokens"
            )


def generation_config(sampler: SamplerConfig, lm: LanguageModel) -> GenerationConfig:
    """Every decoding parameter explicit: none of the model's defaults leaks in."""
    return GenerationConfig(
        do_sample=sampler.do_sample,
        temperature=sampler.temperature,
        top_k=sampler.top_k,
        top_p=sampler.top_p,
        min_p=sampler.min_p,
        typical_p=sampler.typical_p,
        epsilon_cutoff=sampler.epsilon_cutoff,
        eta_cutoff=sampler.eta_cutoff,
        num_beams=sampler.num_beams,
        repetition_penalty=sampler.repetition_penalty,
        max_new_tokens=sampler.max_new_tokens,
        min_new_tokens=0,
        length_penalty=1.0,
        no_repeat_ngram_size=0,
        early_stopping=False,
        num_return_sequences=1,
        use_cache=True,
        bos_token_id=lm.tokenizer.bos_token_id,
        eos_token_id=lm.tokenizer.eos_token_id,
        pad_token_id=lm.tokenizer.pad_token_id,
        return_dict_in_generate=True,
    )


def prompt_token_ids(lm: LanguageModel, prompt: str) -> list[int]:
    """The prompt as the model expects it (BOS where its tokenizer adds one)."""
    ids = lm.tokenizer(prompt).input_ids
    if not ids:  # an empty prompt is conditioned on BOS (or EOS where there is none)
        bos = lm.tokenizer.bos_token_id
        ids = [bos if bos is not None else lm.tokenizer.eos_token_id]
    return ids


def generate(
    lm: LanguageModel,
    prompts: list[str],
    sampler: SamplerConfig,
    seed: int,
    batch_size: int | None,
) -> list[Continuation]:
    """Continue every prompt `sampler.num_samples` times; rows are prompt-major.

    Jobs run in batches of similar prompt length (less left padding); batch_size=None
    picks the largest batch that fits, halving it on out-of-memory.
    """
    jobs = [(p, s) for p in range(len(prompts)) for s in range(sampler.num_samples)]
    encoded = [prompt_token_ids(lm, text) for text in prompts]
    check_prompt_lengths(lm, encoded, sampler.max_new_tokens)
    config = generation_config(sampler, lm)
    torch.manual_seed(seed)  # one RNG stream over the batches in a fixed order
    start = time.perf_counter()
    bar = tqdm(
        total=len(jobs), desc=f"generate {lm.name}", disable=not sys.stderr.isatty()
    )

    opts = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
    heads = [lm.tokenizer.decode(ids, **opts) for ids in encoded]  # once per prompt

    def run(batch: list[int]) -> list[dict]:
        which = [jobs[j][0] for j in batch]
        rows = _generate_batch(
            lm, [encoded[p] for p in which], [heads[p] for p in which], config
        )
        bar.update(len(batch))
        return rows

    lengths = [len(encoded[p]) for p, _ in jobs]
    rows = run_in_batches(lengths, batch_size, run)
    bar.close()
    out = [Continuation(p, s, **row) for (p, s), row in zip(jobs, rows)]
    seconds = time.perf_counter() - start
    n_tokens = sum(len(c.token_ids) for c in out)
    log.info(
        "generated %d continuations, %d tokens in %.1f s (%.1f tokens/s)",
        len(out),
        n_tokens,
        seconds,
        n_tokens / max(seconds, 1e-9),
    )
    return out


@torch.inference_mode()
def _generate_batch(
    lm: LanguageModel,
    prompts: list[list[int]],
    heads: list[str],
    config: GenerationConfig,
) -> list[dict]:
    start = time.perf_counter()
    input_ids, attention_mask = _left_pad(prompts, lm.tokenizer.pad_token_id, lm.device)
    if config.num_beams > 1:
        result = lm.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=config
        )
        new_ids, logprobs = result.sequences[:, input_ids.shape[1] :], None
    else:
        new_ids, logprobs = sample(lm, input_ids, attention_mask, config)
    eos = _eos_ids(config)
    emitted = new_ids.tolist()
    stops = [next((k for k, t in enumerate(ids) if t in eos), None) for ids in emitted]
    kept = [ids[:stop] for ids, stop in zip(emitted, stops)]
    if logprobs is None:
        # Beam scores are per beam and reordered at every step; one scoring pass
        # over the winners is simpler and exact.
        requests = [Request(p + k, len(p)) for p, k in zip(prompts, kept)]
        sums = [float(t.logprobs.sum()) for t in score_batch(lm, requests)]
    else:
        sums = [float(logprobs[i, : len(k)].double().sum()) for i, k in enumerate(kept)]
    seconds = (time.perf_counter() - start) / len(prompts)
    return [
        dict(
            text=continuation_text(lm, prompt, ids, head),
            token_ids=ids,
            finish_reason="length" if stop is None else "eos",
            logprob_sum=total,
            seconds=seconds,
        )
        for prompt, head, ids, stop, total in zip(prompts, heads, kept, stops, sums)
    ]


def _eos_ids(config: GenerationConfig) -> set[int]:
    eos = config.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


def _left_pad(prompts: list[list[int]], pad_id: int, device: torch.device):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def continuation_text(
    lm: LanguageModel, prompt: list[int], new: list[int], head: str | None = None
) -> str:
    """The new tokens' text, cut from the decoded whole so prompt + text == whole.

    `head` is the prompt decoded alone, when the caller already has it.
    """
    decode = lm.tokenizer.decode
    opts = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
    whole = decode(prompt + new, **opts)
    head = decode(prompt, **opts) if head is None else head
    if whole.startswith(head):
        return whole[len(head) :]
    log.warning(
        "decoded prompt is not a prefix of the decoded sequence; decoding alone"
    )
    return decode(new, **opts)

"""Generate stage: every prompt x sample continued by the generator, batched."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import GenerationConfig

from metagen.config import SamplerConfig
from metagen.errors import UserError
from metagen.models import LanguageModel

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
    problems = [
        (s.do_sample and s.temperature <= 0, "temperature must be > 0 when sampling"),
        (not 0 < s.top_p <= 1, "top_p must be in (0, 1]"),
        (s.top_k < 0, "top_k must be >= 0 (0 turns it off)"),
        (not 0 <= s.min_p <= 1, "min_p must be in [0, 1]"),
        (not 0 < s.typical_p <= 1, "typical_p must be in (0, 1]"),
        (not 0 <= s.epsilon_cutoff < 1, "epsilon_cutoff must be in [0, 1)"),
        (not 0 <= s.eta_cutoff < 1, "eta_cutoff must be in [0, 1)"),
        (s.max_new_tokens <= 0, "max_new_tokens must be > 0"),
        (s.num_samples <= 0, "num_samples must be > 0"),
        (s.num_beams < 1, "num_beams must be >= 1"),
        (s.repetition_penalty <= 0, "repetition_penalty must be > 0"),
    ]
    for bad, message in problems:
        if bad:
            raise UserError(f"sampler '{s.name}': {message}")


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
        output_logits=True,
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
    batch_size: int,
) -> list[Continuation]:
    """Continue every prompt `sampler.num_samples` times; rows are prompt-major."""
    jobs = [(p, s) for p in range(len(prompts)) for s in range(sampler.num_samples)]
    encoded = [prompt_token_ids(lm, text) for text in prompts]
    config = generation_config(sampler, lm)
    torch.manual_seed(seed)  # one RNG stream over the batches in a fixed order
    out: list[Continuation] = []
    start, n_tokens = time.perf_counter(), 0
    batches = range(0, len(jobs), batch_size)
    bar = tqdm(batches, desc=f"generate {lm.name}", disable=not sys.stderr.isatty())
    for first in bar:
        chunk = jobs[first : first + batch_size]
        rows = _generate_batch(lm, [encoded[p] for p, _ in chunk], config)
        for (prompt_id, sample_index), row in zip(chunk, rows):
            out.append(Continuation(prompt_id, sample_index, **row))
            n_tokens += len(row["token_ids"])
    seconds = time.perf_counter() - start
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
    lm: LanguageModel, prompts: list[list[int]], config: GenerationConfig
) -> list[dict]:
    start = time.perf_counter()
    input_ids, attention_mask = _left_pad(prompts, lm.tokenizer.pad_token_id, lm.device)
    result = lm.model.generate(
        input_ids=input_ids, attention_mask=attention_mask, generation_config=config
    )
    new_ids = result.sequences[:, input_ids.shape[1] :]
    if config.num_beams > 1:
        # Beam logits are per beam and reordered at every step; one forward pass over
        # the winners is simpler and exact.
        logprobs = _rescore(lm, prompts, new_ids)
    else:
        logprobs = _step_logprobs(result.logits, new_ids)
    seconds = (time.perf_counter() - start) / len(prompts)
    eos = _eos_ids(config)
    rows = []
    for i, prompt in enumerate(prompts):
        ids = new_ids[i].tolist()
        stop = next((k for k, t in enumerate(ids) if t in eos), None)
        kept = ids if stop is None else ids[:stop]
        rows.append(
            dict(
                text=continuation_text(lm, prompt, kept),
                token_ids=kept,
                finish_reason="length" if stop is None else "eos",
                logprob_sum=float(logprobs[i, : len(kept)].double().sum()),
                seconds=seconds,
            )
        )
    return rows


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


def _step_logprobs(step_logits: tuple[torch.Tensor, ...], new_ids: torch.Tensor):
    """Log-probs of the emitted tokens under the raw logits of each step (float32)."""
    columns = []
    for t, logits in enumerate(step_logits):
        logp = torch.log_softmax(logits.float(), dim=-1)
        columns.append(logp.gather(1, new_ids[:, t : t + 1]))
    return (
        torch.cat(columns, dim=1)
        if columns
        else new_ids.new_zeros(new_ids.shape, dtype=torch.float32)
    )


def _rescore(lm: LanguageModel, prompts: list[list[int]], new_ids) -> torch.Tensor:
    """Log-probs of new_ids given each unpadded prompt (padding shifts positions)."""
    rows = []
    for prompt, new in zip(prompts, new_ids):
        full = torch.cat([torch.tensor(prompt, device=new.device), new]).unsqueeze(0)
        logits = lm.model(input_ids=full).logits[0, len(prompt) - 1 : -1].float()
        rows.append(
            torch.log_softmax(logits, -1).gather(1, new.unsqueeze(1)).squeeze(1)
        )
    return torch.stack(rows)


def continuation_text(lm: LanguageModel, prompt: list[int], new: list[int]) -> str:
    """The new tokens' text, cut from the decoded whole so prompt + text == whole."""
    decode = lm.tokenizer.decode
    opts = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
    whole, head = decode(prompt + new, **opts), decode(prompt, **opts)
    if whole.startswith(head):
        return whole[len(head) :]
    log.warning(
        "decoded prompt is not a prefix of the decoded sequence; decoding alone"
    )
    return decode(new, **opts)

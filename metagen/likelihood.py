"""Likelihood under one scorer: log-probs of every continuation given its prompt.

The prompt/continuation boundary follows the lm-evaluation-harness: encode the
prompt and prompt + text, take the tokens after the prompt's length as the
continuation, and move a trailing space of the prompt into the continuation.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields

import numpy as np
import torch
from tqdm import tqdm

from metagen.batching import run_in_batches
from metagen.models import LanguageModel
from metagen.vocab import token_stats


@dataclass
class Request:
    """Score ids[start:] given ids[:start]."""

    ids: list[int]
    start: int


@dataclass
class Tokens:
    """What a forward pass yields for the scored positions of one request."""

    logprobs: np.ndarray  # float64
    entropies: np.ndarray
    greedy_match: np.ndarray  # bool

    def part(self, start: int, stop: int) -> Tokens:
        return Tokens(*(getattr(self, f.name)[start:stop] for f in fields(self)))


def split_pair(prompt: str, text: str) -> tuple[str, str]:
    """Move the prompt's trailing whitespace into the continuation (harness rule)."""
    stripped = prompt.rstrip()
    return stripped, prompt[len(stripped) :] + text


def bos_ids(lm: LanguageModel) -> list[int]:
    """[BOS] where the tokenizer adds one by default, else []."""
    tok = lm.tokenizer
    probe = tok("a").input_ids
    if tok.bos_token_id is not None and probe and probe[0] == tok.bos_token_id:
        return [tok.bos_token_id]
    return []


def continuation_request(
    lm: LanguageModel, prompt: str, text: str, bos: list[int], contexts: dict
) -> tuple[Request, bool]:
    """The request scoring text given prompt, cut to the context, and whether it was
    cut. `bos` (bos_ids) and `contexts` (prompt -> its ids, filled as it goes) are
    shared by one scorer's calls: a prompt shared by many texts is tokenized once."""
    context, continuation = split_pair(prompt, text)
    encode = lm.tokenizer.encode
    if context not in contexts:
        contexts[context] = encode(context, add_special_tokens=False) if context else []
    ctx = contexts[context]
    whole = encode(context + continuation, add_special_tokens=False)
    cont = whole[len(ctx) :]
    prefix = bos + ctx
    if not prefix:  # nothing to condition on: BOS, or EOS where there is no BOS
        tok = lm.tokenizer
        prefix = [
            tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        ]
    limit = lm.context_length
    truncated = len(prefix) + len(cont) > limit
    if truncated:
        if len(cont) >= limit:  # the continuation alone is too long: keep what fits
            prefix, cont = prefix[-1:], cont[: limit - 1]
        else:  # cut the prompt from the left, keep the continuation whole
            prefix = prefix[len(prefix) + len(cont) - limit :]
    return Request(prefix + cont, len(prefix)), truncated


def notebook_request(lm: LanguageModel, prompt: str, text: str) -> Request:
    """The original notebook's whole-text scoring, from token 1: prompt + " " + the
    text stripped, as the notebook kept its generations."""
    ids = lm.tokenizer.encode(prompt + " " + text.strip())[: lm.context_length]
    return Request(ids, 1)


@dataclass
class Plan:
    """What score_texts runs through the model, and why."""

    run: list[Request]  # one per pair (its continuation), then the extra passes
    main: list[Request]  # each pair's continuation request
    notebook: list[Request]  # each pair's whole-text request
    truncated: list[bool]
    shared: list[bool]  # one pass from token 1 serves both of this pair's requests


def scoring_requests(lm: LanguageModel, pairs: list[tuple[str, str]]) -> Plan:
    """The forward passes that score `pairs`.

    Where a pair's notebook tokens start its continuation request (usually: a text
    that begins with one space and ends without whitespace, a tokenizer that adds no
    EOS, nothing cut) that pass, scored from token 1, serves the notebook metrics
    too, halving the work. Other pairs' notebook requests follow, in order.
    """
    bos, contexts = bos_ids(lm), {}
    made = [continuation_request(lm, p, t, bos, contexts) for p, t in pairs]
    main = [request for request, _ in made]
    notebook = [notebook_request(lm, p, t) for p, t in pairs]
    shared = [shares_pass(m, n) for m, n in zip(main, notebook)]
    run = [Request(m.ids, 1) if both else m for m, both in zip(main, shared)]
    run += [n for n, both in zip(notebook, shared) if not both]
    return Plan(run, main, notebook, [cut for _, cut in made], shared)


def shares_pass(main: Request, notebook: Request) -> bool:
    """Whether the notebook's tokens start the continuation request's."""
    return bool(notebook.ids) and main.ids[: len(notebook.ids)] == notebook.ids


@torch.inference_mode()
def score_requests(
    lm: LanguageModel,
    requests: list[Request],
    batch_size: int | None,
    desc: str = "",
) -> list[Tokens]:
    """Run every request through the model in right-padded batches of similar length.

    batch_size=None picks the largest batch that fits, halving it on out-of-memory.
    """
    bar = tqdm(
        total=len(requests),
        desc=desc or f"score {lm.name}",
        disable=not sys.stderr.isatty(),
    )

    def run(batch: list[int]) -> list[Tokens]:
        out = score_batch(lm, [requests[i] for i in batch])
        bar.update(len(batch))
        return out

    results = run_in_batches([len(r.ids) for r in requests], batch_size, run)
    bar.close()
    return results


def score_batch(lm: LanguageModel, requests: list[Request]) -> list[Tokens]:
    width = max(len(r.ids) for r in requests)
    ids = torch.full((len(requests), width), lm.tokenizer.pad_token_id)
    for i, r in enumerate(requests):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
    # Right padding keeps every real token at positions 0..n-1 and, under the causal
    # mask, out of sight of the padding after it: no attention mask is needed, which
    # lets attention take its fused causal kernel. Padding rows' outputs are unused.
    hidden = lm.model.base_model(input_ids=ids.to(lm.device)).last_hidden_state
    # Only the positions that predict a scored token go through the vocab projection.
    rows, cols, targets = [], [], []
    for i, r in enumerate(requests):
        positions = range(r.start - 1, len(r.ids) - 1)
        rows += [i] * len(positions)
        cols += list(positions)
        targets += r.ids[r.start :]
    picked = hidden[
        torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
    ]
    targets = torch.tensor(targets, dtype=torch.long, device=lm.device)
    stats = token_stats(lm, picked, targets)
    out, at = [], 0
    for r in requests:
        n = len(r.ids) - r.start
        out.append(Tokens(*(s[at : at + n] for s in stats)))
        at += n
    return out


def text_metrics(tokens: Tokens, scored_text: str) -> dict:
    """The design's metrics of one continuation; NaN where a text is empty."""
    lp = tokens.logprobs
    n, n_bytes = len(lp), len(scored_text.encode("utf-8"))
    total = float(lp.sum())  # float64
    mean = total / n if n else math.nan
    return dict(
        n_tokens=n,
        n_bytes=n_bytes,
        n_chars=len(scored_text),
        n_words=len(scored_text.split()),
        logprob_sum=total,
        mean_logprob=mean,
        perplexity=math.exp(-mean) if n else math.nan,
        cross_entropy=-mean,
        bits_per_byte=-total / (n_bytes * math.log(2)) if n_bytes else math.nan,
        mean_token_prob=float(np.exp(lp).mean()) if n else math.nan,
        mean_entropy=float(tokens.entropies.mean()) if n else math.nan,
        greedy_match_frac=float(tokens.greedy_match.mean()) if n else math.nan,
        token_logprobs=lp.astype(np.float32),
    )


def notebook_metrics(tokens: Tokens) -> dict:
    lp = tokens.logprobs
    mean = float(lp.mean()) if len(lp) else math.nan
    return dict(seq_mean_logprob=mean, seq_perplexity=math.exp(-mean))


def score_texts(
    lm: LanguageModel, pairs: list[tuple[str, str]], batch_size: int | None
) -> list[dict]:
    """Every metric of every (prompt, text) pair under one scorer, in input order.

    batch_size=None picks the largest batch that fits (see score_requests).
    """
    plan = scoring_requests(lm, pairs)
    # One pass over both kinds: the length sort packs them into the fewest batches.
    tokens = score_requests(lm, plan.run, batch_size)
    separate = iter(tokens[len(pairs) :])
    rows = []
    for k, (prompt, text) in enumerate(pairs):
        main = plan.main[k]
        if plan.shared[k]:  # one pass, scored from token 1
            continuation = tokens[k].part(main.start - 1, len(main.ids) - 1)
            whole = tokens[k].part(0, len(plan.notebook[k].ids) - 1)
        else:
            continuation, whole = tokens[k], next(separate)
        row = text_metrics(continuation, split_pair(prompt, text)[1])
        row.update(notebook_metrics(whole))
        row["truncated"] = plan.truncated[k]
        row["scored_ids"] = main.ids[main.start :]
        rows.append(row)
    return rows

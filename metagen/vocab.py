"""Full-vocabulary statistics at scored positions: log-prob, entropy, argmax match.

Computed one vocabulary block at a time with a running log-sum-exp, so that no
(positions x vocabulary) tensor is ever built: on a 262k vocabulary such a tensor
is hundreds of MB, and each pass over it (max, exp, sum, ...) goes to memory.
"""

from __future__ import annotations

import numpy as np
import torch

from metagen.models import LanguageModel
from metagen.packed import HEAD_BLOCK, PackedLinear, linear

# Scored positions projected at once: enough rows to amortize reading the head's
# weights; times HEAD_BLOCK float32 logits (8 MB) they stay in cache.
POSITIONS = 512


def token_stats(lm: LanguageModel, hidden: torch.Tensor, targets: torch.Tensor):
    """Log-prob of each target, predictive entropy and argmax match, in float32."""
    out = [_chunk_stats(lm, hidden[at : at + POSITIONS], targets[at : at + POSITIONS])
           for at in range(0, len(targets), POSITIONS)]  # fmt: skip
    if not out:
        empty = np.zeros(0)
        return empty, empty, np.zeros(0, dtype=bool)
    logprobs, entropies, matches = (torch.cat(column).cpu() for column in zip(*out))
    return logprobs.double().numpy(), entropies.double().numpy(), matches.numpy()


def _chunk_stats(lm: LanguageModel, hidden: torch.Tensor, targets: torch.Tensor):
    """The full-vocabulary log-softmax of each position, one vocabulary block at a time.

    A running (max, sum of exp, sum of exp x centred) per position gives the log
    normalizer and the entropy exactly, as a log-softmax over the whole vocabulary
    would, without ever holding a (positions x vocabulary) tensor: each block stays
    in cache, where a 262k-wide tensor would cost a trip to memory per pass (and a
    fresh page-faulted allocation per call). Measured 1.8x faster than one big
    log-softmax on Gemma's head, and the entropy is closer to a float64 reference.
    """
    n = len(targets)
    rows = torch.arange(n, device=hidden.device)
    top = torch.full((n,), float("-inf"), device=hidden.device)
    total = torch.zeros(n, device=hidden.device)  # sum exp(x - top)
    moment = torch.zeros(n, device=hidden.device)  # sum exp(x - top) (x - top)
    target_logit = torch.empty(n, device=hidden.device)
    for start, x in _vocab_blocks(lm, hidden):
        # Gathered without a boolean mask (no device sync per block on a GPU).
        inside = (targets >= start) & (targets < start + x.shape[1])
        column = (targets - start).clamp(0, x.shape[1] - 1)
        target_logit = torch.where(inside, x[rows, column].float(), target_logit)
        new_top = torch.maximum(top, x.amax(1))
        scale = torch.exp(top - new_top)
        shift = torch.where(total > 0, top - new_top, 0.0)
        centred = x.sub_(new_top[:, None])
        weights = centred.exp()
        block_total = weights.sum(1)
        moment = scale * (moment + shift * total) + weights.mul_(centred).sum(1)
        total = total * scale + block_total
        top = new_top
    log_total = total.log()
    logprobs = target_logit - top - log_total
    entropies = log_total - moment / total
    # The target is the argmax when it reaches the maximum (a tie counts as a match).
    return logprobs, entropies, target_logit == top


def _vocab_blocks(lm: LanguageModel, hidden: torch.Tensor):
    """(first vocabulary id, float32 logits of shape (positions, block)) per block."""
    head = lm.model.get_output_embeddings()
    cap = getattr(lm.model.config, "final_logit_softcapping", None)
    if isinstance(head, PackedLinear) and head.blocks and head.usable(hidden):
        for start, packed, bias in head.blocks:
            yield start, _float_logits(linear(hidden, packed, bias), cap)
    elif isinstance(head, (torch.nn.Linear, PackedLinear)):
        weight, bias = head.weight, head.bias
        for start in range(0, weight.shape[0], HEAD_BLOCK):
            # W_block @ hidden.T: MKL ran hidden @ W.T up to 3x slower for few rows.
            x = torch.mm(weight[start : start + HEAD_BLOCK], hidden.T).T
            if bias is not None:
                x = x + bias[start : start + HEAD_BLOCK]
            yield start, _float_logits(x, cap)
    else:  # an unusual head: its own forward
        yield 0, _float_logits(head(hidden), cap)


def _float_logits(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    x = x.float()  # log-softmax statistics in float32 whatever the model dtype
    return torch.tanh(x / cap) * cap if cap else x

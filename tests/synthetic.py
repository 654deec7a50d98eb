"""Synthetic runs with every contract column, for the analysis and report tests:
`make_tables` builds a run's generations and scores, `make_run` writes a run dir."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

LlFunction = Callable[[int, int, str], float]
XSS_PROMPT = "<script>alert(1)</script> and <img src=x onerror=alert(1)> \"'&"


def default_ll(generator: str) -> LlFunction:
    """Per-byte LL: harder for later prompts, and a scorer favours its own text."""
    return lambda p, k, scorer: -1.0 - 0.1 * p - 0.02 * k + 0.2 * (scorer == generator)


def make_tables(
    generator: str = "small",
    scorers: Sequence[str] = ("small", "medium"),
    prompts: Sequence[str] = ("The ocean is", "Space is"),
    n_samples: int = 2,
    ll: LlFunction | None = None,
    text: Callable[[int, int], str] | None = None,
    sampler: str = "temperature",
    temperature: float = 0.8,
    run_id: str = "run0",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(generations, scores) for one run; scores follow `ll` in nats/byte."""
    ll = ll or default_ll(generator)
    text = text or (lambda p, k: f"{generator} continues prompt {p}, sample {k}.")
    generations, scores = [], []
    for p, prompt in enumerate(prompts):
        for k in range(n_samples):
            body = text(p, k)
            n_bytes = len(body.encode())
            n_new = n_bytes // 4
            gen_id = f"{run_id}-{p}-{k}"
            own = ll(p, k, generator) * n_bytes
            generations.append(
                {
                    "generation_id": gen_id, "run_id": run_id, "prompt_set": "test",
                    "prompt_id": p, "prompt": prompt, "sample_index": k,
                    "generator": generator, "sampler": sampler,
                    "temperature": temperature, "top_k": 0, "top_p": 1.0,
                    "min_p": 0.0, "typical_p": 1.0, "num_beams": 1, "seed": 7,
                    "max_new_tokens": 32, "dtype": "float32", "text": body,
                    "n_new_tokens": n_new,
                    "finish_reason": "length" if k % 2 else "eos",
                    "gen_seconds": 0.5 + 0.1 * p + 0.05 * k,
                    "gen_logprob_sum": own + 0.25,
                    "gen_token_ids": np.arange(n_new, dtype=np.int32),
                }
            )  # fmt: skip
            for scorer in scorers:
                scores.append(_score_row(generations[-1], scorer, ll(p, k, scorer)))
    return _typed(pd.DataFrame(generations)), _typed(pd.DataFrame(scores))


def _score_row(generation: dict, scorer: str, ll: float) -> dict:
    n_bytes = len(generation["text"].encode())
    n_tokens = n_bytes // 3
    total = ll * n_bytes
    nan = float("nan")
    mean = total / n_tokens if n_tokens else nan
    keep = ("generation_id", "run_id", "prompt_set", "prompt_id", "sample_index")
    keep += ("generator", "sampler", "temperature", "top_p", "seed")
    return {key: generation[key] for key in keep} | {
        "scorer": scorer, "n_tokens": n_tokens, "n_bytes": n_bytes,
        "n_chars": len(generation["text"]), "n_words": len(generation["text"].split()),
        "logprob_sum": total, "mean_logprob": mean, "perplexity": math.exp(-mean),
        "cross_entropy": -mean, "bits_per_byte": -ll / math.log(2) if n_bytes else nan,
        "mean_token_prob": math.exp(mean), "mean_entropy": 2.0 if n_tokens else nan,
        "greedy_match_frac": 0.5 if n_tokens else nan,
        "token_logprobs": np.full(n_tokens, mean, dtype=np.float32),
        "seq_mean_logprob": mean, "seq_perplexity": math.exp(-mean),
        "truncated": False,
        "retokenized_same": True if scorer == generation["generator"] else None,
    }  # fmt: skip


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    int32 = ["prompt_id", "sample_index", "top_k", "num_beams", "max_new_tokens"]
    int32 += ["n_new_tokens", "n_tokens", "n_bytes", "n_chars", "n_words"]
    return frame.astype({c: "int32" for c in int32 if c in frame.columns})


def make_run(
    run_dir: Path,
    tables: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    status: str = "completed",
    error: str | None = None,
) -> Path:
    """A run dir as the pipeline writes it."""
    generations, scores = tables if tables is not None else make_tables()
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("model: {name: small}\n")
    generations.to_parquet(run_dir / "generations.parquet")
    scores.to_parquet(run_dir / "scores.parquet")
    status_doc = {"status": status, "error": error, "config_hash": "abc123"}
    (run_dir / "status.json").write_text(json.dumps(status_doc))
    return run_dir

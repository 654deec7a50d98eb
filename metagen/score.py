"""Score stage: every model of the panel scores every continuation of the run.

Scores are cached by content (scorer config, dtype, prompt, text), so a scorer never
scores the same text twice within a run or across the jobs of a sweep.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from metagen.config import Config, ModelConfig
from metagen.devices import check_batch_size
from metagen.likelihood import score_texts
from metagen.tables import KEY_FIELDS, write_text_atomic

log = logging.getLogger(__name__)

# Bumped whenever a score's definition changes (2: seq_* over the stripped text), so
# cached scores, resumed runs and finished sweep jobs of another version are redone.
METRICS_VERSION = 2

# The run's config columns are copied from the generations table onto every row.
KEY_COLUMNS = [
    "generation_id", *(name for name, _ in KEY_FIELDS), "prompt_id", "sample_index",
]  # fmt: skip


def score_panel(cfg: Config, generations: pd.DataFrame, models, cache: Path | None):
    """One row per (continuation, scorer), scorers in panel order."""
    frames = []
    for scorer in cfg.scorers.values():
        frames.append(score_generations(scorer, cfg, generations, models, cache))
    return pd.concat(frames, ignore_index=True)


def score_generations(
    scorer: ModelConfig,
    cfg: Config,
    generations: pd.DataFrame,
    models,
    cache: Path | None,
) -> pd.DataFrame:
    pairs = list(zip(generations["prompt"], generations["text"]))
    keys = [cache_key(scorer, cfg.device.dtype, p, t) for p, t in pairs]
    found = {k: v for k in set(keys) if (v := read_cached(cache, k)) is not None}
    todo = [(k, pair) for k, pair in dict(zip(keys, pairs)).items() if k not in found]
    seconds = 0.0
    if todo:
        lm = models.get(scorer)
        start = time.perf_counter()
        rows = score_texts(
            lm, [pair for _, pair in todo], check_batch_size(cfg.device.batch_size)
        )
        seconds = time.perf_counter() - start
        n_tokens = sum(r["n_tokens"] for r in rows)
        log.info(
            "%s scored %d texts, %d tokens in %.1f s (%.1f tokens/s)",
            scorer.name,
            len(rows),
            n_tokens,
            seconds,
            n_tokens / max(seconds, 1e-9),
        )
        for (key, _), row in zip(todo, rows):
            found[key] = row
            write_cached(cache, key, row)
    if len(todo) < len(set(keys)):
        log.info(
            "%s: %d texts taken from the score cache",
            scorer.name,
            len(set(keys)) - len(todo),
        )
    frame = pd.DataFrame([found[k] for k in keys])
    for column in KEY_COLUMNS:
        frame[column] = generations[column].to_numpy()
    frame["scorer"] = scorer.name
    frame["score_seconds"] = seconds / max(len(todo), 1) if todo else 0.0
    frame["retokenized_same"] = [
        list(ids) == list(gen) if scorer.name == g else None
        for ids, gen, g in zip(
            frame["scored_ids"], generations["gen_token_ids"], generations["generator"]
        )
    ]
    return frame.drop(columns=["scored_ids"])


def cache_key(scorer: ModelConfig, dtype: str, prompt: str, text: str) -> str:
    raw = json.dumps(
        [METRICS_VERSION, asdict(scorer), dtype, prompt, text], sort_keys=True
    )
    return hashlib.sha256(raw.encode()).hexdigest()


def read_cached(cache: Path | None, key: str) -> dict | None:
    if cache is None:
        return None
    try:
        row = json.loads(_cache_path(cache, key).read_text())
    except (OSError, ValueError):
        return None  # missing, or half-written by a killed job: score it again
    row["token_logprobs"] = np.asarray(row["token_logprobs"], dtype=np.float32)
    return row


def write_cached(cache: Path | None, key: str, row: dict) -> None:
    if cache is None:
        return
    path = _cache_path(cache, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = {
        k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()
    }
    # Atomic: parallel jobs writing the same key is harmless.
    write_text_atomic(json.dumps(plain), path)


def _cache_path(cache: Path, key: str) -> Path:
    return cache / key[:2] / f"{key}.json"

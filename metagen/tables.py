"""Parquet schemas of the run tables, and atomic writes (temp file, then os.replace)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CONFIG_KEY = b"metagen.config"  # the full composed config of the run
STAGE_KEY = b"metagen.stage"  # the part of it the table depends on (for resume)

# Config fields every table carries, so a merged table needs no Hydra to read.
KEY_FIELDS = [
    ("run_id", pa.string()),
    ("prompt_set", pa.string()),
    ("generator", pa.string()),
    ("sampler", pa.string()),
    ("temperature", pa.float64()),
    ("top_k", pa.int32()),
    ("top_p", pa.float64()),
    ("min_p", pa.float64()),
    ("typical_p", pa.float64()),
    ("num_beams", pa.int32()),
    ("seed", pa.int64()),
    ("max_new_tokens", pa.int32()),
    ("dtype", pa.string()),
]

GENERATIONS = pa.schema(
    [("generation_id", pa.string())]
    + KEY_FIELDS
    + [
        ("prompt_id", pa.int32()),
        ("prompt", pa.string()),
        ("sample_index", pa.int32()),
        ("text", pa.string()),
        ("n_new_tokens", pa.int32()),
        ("finish_reason", pa.string()),
        ("gen_seconds", pa.float64()),
        ("gen_logprob_sum", pa.float64()),
        ("gen_token_ids", pa.list_(pa.int32())),
    ]
)

METRICS = [
    "logprob_sum", "mean_logprob", "perplexity", "cross_entropy", "bits_per_byte",
    "mean_token_prob", "mean_entropy", "greedy_match_frac",
]  # fmt: skip

SCORES = pa.schema(
    [("generation_id", pa.string())]
    + KEY_FIELDS
    + [
        ("prompt_id", pa.int32()),
        ("sample_index", pa.int32()),
        ("scorer", pa.string()),
        ("n_tokens", pa.int32()),
        ("n_bytes", pa.int32()),
        ("n_chars", pa.int32()),
        ("n_words", pa.int32()),
    ]
    + [(name, pa.float64()) for name in METRICS]
    + [
        ("token_logprobs", pa.list_(pa.float32())),
        ("seq_mean_logprob", pa.float64()),
        ("seq_perplexity", pa.float64()),
        ("truncated", pa.bool_()),
        ("retokenized_same", pa.bool_()),
        ("score_seconds", pa.float64()),
    ]
)


def to_table(
    frame: pd.DataFrame,
    schema: pa.Schema | None,
    config: dict,
    stage: dict | None = None,
) -> pa.Table:
    """Cast to the declared schema; attach the config (and stage key) as metadata."""
    if schema is None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    else:
        table = pa.Table.from_pandas(
            frame[schema.names], schema=schema, preserve_index=False
        )
    meta = {CONFIG_KEY: json.dumps(config).encode()}
    if stage is not None:
        meta[STAGE_KEY] = json.dumps(stage).encode()
    return table.replace_schema_metadata(meta)


def replace_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """write(temp) to a sibling temp file, then rename: no reader sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(table: pa.Table, path: Path) -> None:
    def write(tmp: Path) -> None:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())

    replace_atomic(path, write)


def write_text_atomic(text: str, path: Path) -> None:
    replace_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_metadata(path: Path, key: bytes = CONFIG_KEY) -> dict | None:
    """A JSON entry of a table's metadata; None if absent or unreadable."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = meta.get(key)
    return json.loads(raw) if raw else None

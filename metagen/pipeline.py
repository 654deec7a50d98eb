"""One run: generate -> score with every panel model -> analyze, into one run dir."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from metagen import analyze, score
from metagen.config import CONF_DIR, Config, ModelConfig, register_configs
from metagen.devices import check_batch_size, resolve_device, resolve_dtype, set_threads
from metagen.errors import UserError, config_error
from metagen.generate import check_sampler, generate
from metagen.models import LanguageModel, check_model_config, load_model
from metagen.prompts import load_prompts
from metagen.score import score_panel
from metagen.tables import (
    GENERATIONS,
    KEY_FIELDS,
    SCORES,
    STAGE_KEY,
    read_metadata,
    to_table,
    write_atomic,
)

log = logging.getLogger(__name__)


GENERATIONS_FILE, SCORES_FILE = "generations.parquet", "scores.parquet"
SUMMARY_FILE = "summary.parquet"
TABLES = (GENERATIONS_FILE, SCORES_FILE, SUMMARY_FILE)  # what a finished run holds


@dataclass
class RunResult:
    status: str  # completed | skipped | failed
    config_hash: str
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    # Read when a run ends, not at import: the score definitions it used.
    metrics_version: int = field(default_factory=lambda: score.METRICS_VERSION)


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def compose_raw(overrides: list[str] | None = None) -> DictConfig:
    """The DictConfig Hydra hands the app for these overrides, without running it
    (for tests, the benchmark and notebooks)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


def compose_config(overrides: list[str] | None = None) -> Config:
    """The typed config `python -m metagen <overrides>` runs with."""
    return to_config(compose_raw(overrides))


def to_config(cfg: DictConfig) -> Config:
    """The typed config, without Hydra's own node."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        plain.pop("hydra", None)
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), plain))
    except OmegaConfBaseException as err:  # e.g. +sampler.temprature=0.5
        raise config_error(err) from None


def run(cfg: Config, run_dir: Path, score_cache: Path | None = None) -> RunResult:
    """Run every stage whose output is missing or stale; return timings.

    `score_cache` is a dir shared by the jobs of a sweep (None: no cache).
    """
    config = asdict(cfg)
    result = RunResult("completed", config_hash(config))
    check_config(cfg)
    set_threads(cfg.device.num_threads)
    prompt_set, prompts = load_prompts(cfg.prompts)
    run_dir.mkdir(parents=True, exist_ok=True)
    models = ModelPool(cfg)
    # Each stage reuses its table when the part of the config it depends on matches.
    start = time.perf_counter()
    made_by = ["model", "sampler", "prompts", "seed"]
    generations = _stage(
        run_dir / GENERATIONS_FILE, "generating", GENERATIONS, config,
        stage_key(config, made_by), cfg.resume,
        lambda: generation_table(cfg, result.config_hash, prompt_set, prompts, models),
    )  # fmt: skip
    result.seconds["generate"] = time.perf_counter() - start
    start = time.perf_counter()
    cache = score_cache if cfg.score_cache else None
    scores = _stage(
        run_dir / SCORES_FILE, "scoring", SCORES, config,
        stage_key(config, [*made_by, "scorers"])
        | {"metrics_version": score.METRICS_VERSION},
        cfg.resume, lambda: score_panel(cfg, generations, models, cache),
    )  # fmt: skip
    models.release()
    result.seconds["score"] = time.perf_counter() - start
    summary = analyze.summarize(generations, scores)
    for name, _ in KEY_FIELDS:  # so merged summaries need no join to be read
        summary[name] = generations[name].iloc[0] if len(generations) else None
    write_atomic(to_table(summary, None, config), run_dir / SUMMARY_FILE)
    log.info("summary of %s\n%s", run_dir, analyze.format_summary(summary))
    return result


def check_config(cfg: Config) -> None:
    """Fail before any model loads on values that cannot work."""
    resolve_device(cfg.device.device)
    resolve_dtype(cfg.device.dtype)
    check_batch_size(cfg.device.batch_size)
    check_sampler(cfg.sampler)
    for model in [cfg.model, *cfg.scorers.values()]:
        check_model_config(model)  # a typo in a scorer must not wait for generation
    if not cfg.scorers:
        raise UserError(
            "scorers: the panel is empty; add one with +model@scorers.small=small"
        )
    names = [s.name for s in cfg.scorers.values()]
    if len(set(names)) != len(names):
        raise UserError(f"scorers: two panel models share a name: {sorted(names)}")


def stage_key(config: dict, fields: list[str]) -> dict:
    """The config a stage depends on: its table is reused only if this matches."""
    key = {name: config[name] for name in fields}
    key["device"] = {"dtype": config["device"]["dtype"]}  # where it ran changes nothing
    return key


def _stage(
    path: Path,
    verb: str,
    schema: pa.Schema,
    config: dict,
    key: dict,
    resume: bool,
    build: Callable[[], pd.DataFrame],
) -> pd.DataFrame:
    """The stage's table: read back if it matches `key`, else built and written."""
    if resume and stage_done(path, key):
        log.info("%s matches the config: not %s again", path.name, verb)
        return pd.read_parquet(path)
    frame = build()
    write_atomic(to_table(frame, schema, config, key), path)
    return frame


def stage_done(path: Path, key: dict) -> bool:
    return path.exists() and read_metadata(path, STAGE_KEY) == json.loads(
        json.dumps(key)
    )


def generation_table(
    cfg: Config, run_id: str, prompt_set: str, prompts: list[str], models: ModelPool
) -> pd.DataFrame:
    lm = models.get(cfg.model)
    batch = check_batch_size(cfg.device.batch_size)  # None: "auto"
    rows = generate(lm, prompts, cfg.sampler, cfg.seed, batch)
    s = cfg.sampler
    frame = pd.DataFrame(
        dict(
            prompt_id=c.prompt_id,
            prompt=prompts[c.prompt_id],
            sample_index=c.sample_index,
            text=c.text,
            n_new_tokens=len(c.token_ids),
            finish_reason=c.finish_reason,
            gen_seconds=c.seconds,
            gen_logprob_sum=c.logprob_sum,
            gen_token_ids=c.token_ids,
        )
        for c in rows
    )
    keys = dict(
        run_id=run_id, prompt_set=prompt_set, generator=lm.name, sampler=s.name,
        temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
        typical_p=s.typical_p, num_beams=s.num_beams, seed=cfg.seed,
        max_new_tokens=s.max_new_tokens, dtype=cfg.device.dtype,
    )  # fmt: skip
    for name, value in keys.items():
        frame[name] = value
    frame["generation_id"] = [
        generation_id(run_id, p, i)
        for p, i in zip(frame["prompt"], frame["sample_index"])
    ]
    return frame


def generation_id(run_id: str, prompt: str, sample_index: int) -> str:
    raw = json.dumps([run_id, prompt, int(sample_index)])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class ModelPool:
    """Each model is loaded once per run, even when it both generates and scores."""

    def __init__(self, cfg: Config):
        self.device = cfg.device
        self.loaded: dict[str, LanguageModel] = {}

    def get(self, model: ModelConfig) -> LanguageModel:
        key = json.dumps(asdict(model), sort_keys=True)
        if key not in self.loaded:
            self.loaded[key] = load_model(model, self.device)
        return self.loaded[key]

    def release(self) -> None:
        # joblib reuses worker processes: free the weights when the job ends.
        self.loaded.clear()
        gc.collect()

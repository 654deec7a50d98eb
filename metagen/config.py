"""Typed schemas for every config group; the YAML files under conf/ extend them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# The config tree at the repository root, by absolute path: `python -m metagen`, the
# `metagen` script, tests and the benchmark all find the same one.
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class ModelConfig:
    # `name` identifies the model in every table, as generator and as scorer alike.
    name: str = MISSING
    # package: a GGUF file shipped in a PyPI package; hub: a hub id or local dir
    # in `path`; random: an untrained model built from the shape fields below.
    source: str = MISSING
    path: Optional[str] = None
    package: Optional[str] = None
    package_version: Optional[str] = None
    file: Optional[str] = None
    # Shape of a randomly initialised model (source: random).
    arch: str = "llama"
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    init_seed: int = 0
    # Random models borrow the tokenizer of a packaged model config (by file name).
    tokenizer_from: Optional[str] = None
    # Caps the context; null means the model's own maximum.
    context_length: Optional[int] = None
    trust_remote_code: bool = False


@dataclass
class SamplerConfig:
    # Every parameter is explicit so that no generation_config.json default leaks in.
    name: str = MISSING
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    num_beams: int = 1
    repetition_penalty: float = 1.0
    max_new_tokens: int = 35
    num_samples: int = 1


@dataclass
class PromptsConfig:
    name: str = MISSING
    prompts: List[str] = field(default_factory=list)
    # A YAML, .txt or .jsonl file that replaces `prompts` when set.
    file: Optional[str] = None


@dataclass
class DeviceConfig:
    name: str = MISSING
    device: str = "auto"
    dtype: str = "float32"
    # An int, or "auto" to find the largest batch that fits (backing off on OOM).
    batch_size: Any = 16
    num_threads: Optional[int] = None


@dataclass
class Config:
    model: ModelConfig = MISSING
    scorers: Dict[str, ModelConfig] = field(default_factory=dict)
    sampler: SamplerConfig = MISSING
    prompts: PromptsConfig = MISSING
    device: DeviceConfig = MISSING
    seed: int = 0
    # Skip a job (or stage) whose finished output matches this config.
    resume: bool = True
    # Reuse scores of identical (scorer, prompt, text) across jobs of a sweep.
    score_cache: bool = True


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="sampler", name="base_sampler", node=SamplerConfig)
    cs.store(group="prompts", name="base_prompts", node=PromptsConfig)
    cs.store(group="device", name="base_device", node=DeviceConfig)

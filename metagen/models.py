"""Load generator and scorer models: packaged GGUF, hub id or local dir, random init.

Packaged GGUF files take ~15-50 s to dequantize (mostly tokenizer conversion), so the
first load converts them once into a safetensors + tokenizer cache that later loads
read in about a second.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from metagen.config import CONF_DIR, DeviceConfig, ModelConfig
from metagen.devices import resolve_device, resolve_dtype
from metagen.errors import UserError, first_line
from metagen.model_cache import packaged_model_dir
from metagen.packed import pack_linears

log = logging.getLogger(__name__)


class ModelLoadError(UserError):
    """A model could not be loaded; the message says which and how to fix it."""


@dataclass
class LanguageModel:
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    context_length: int
    device: torch.device
    n_params: int


def check_model_config(cfg: ModelConfig) -> None:
    """Cheap checks run before any model loads, so a bad scorer fails in seconds."""
    if cfg.path:
        where = cfg.path
        looks_local = where.startswith((".", "/", "~")) or where.count("/") > 1
        if looks_local and not Path(where).expanduser().exists():
            raise ModelLoadError(
                f"model '{cfg.name}': model.path '{where}' does not exist"
            )
    elif cfg.source not in ("package", "random"):
        raise ModelLoadError(
            f"model '{cfg.name}': source '{cfg.source}' needs model.path "
            "(a hub id or a local directory)"
        )
    if not cfg.path and cfg.source == "random" and not cfg.tokenizer_from:
        raise ModelLoadError(f"model '{cfg.name}': a random model needs tokenizer_from")


def load_model(cfg: ModelConfig, device_cfg: DeviceConfig) -> LanguageModel:
    """Load one model onto the configured device, in eval mode."""
    check_model_config(cfg)
    device, dtype = resolve_device(device_cfg.device), resolve_dtype(device_cfg.dtype)
    start = time.perf_counter()
    if cfg.path:
        model, tokenizer = _load_pretrained(cfg, cfg.path, dtype)
    elif cfg.source == "package":
        model, tokenizer = _load_pretrained(cfg, str(packaged_model_dir(cfg)), dtype)
    else:  # "random": check_model_config has refused any other source
        model, tokenizer = _build_random(cfg, dtype)
    model.to(device).eval()
    if device.type == "cpu":
        pack_linears(model)  # oneDNN's linear: ~2x MKL's at decoding batch sizes
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    context = (
        model.config.max_position_embeddings
        if hasattr(model.config, "max_position_embeddings")
        else model.config.n_positions
    )
    if cfg.context_length:
        context = min(context, cfg.context_length)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "loaded %s (%.1fM params, %s, %s) in %.1f s",
        cfg.name,
        n_params / 1e6,
        device,
        dtype,
        time.perf_counter() - start,
    )
    return LanguageModel(cfg.name, model, tokenizer, int(context), device, n_params)


def _load_pretrained(cfg: ModelConfig, where: str, dtype: torch.dtype):
    local = Path(where).expanduser()
    if local.is_dir():
        _check_model_dir(cfg, local)
    # A hub id with no reachable hub: read the local HF cache only, failing at once
    # instead of after five retries per file (about a minute) and a page of warnings.
    offline = {} if local.is_dir() or _hub_reachable() else {"local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            where, trust_remote_code=cfg.trust_remote_code, **offline
        )
        model = AutoModelForCausalLM.from_pretrained(
            where,
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=cfg.trust_remote_code,
            **offline,
        )
    except OSError as err:
        if local.is_dir():
            raise ModelLoadError(
                f"model '{cfg.name}': '{where}' is not a causal LM directory with "
                f"safetensors weights and a tokenizer ({first_line(err)})"
            ) from None
        raise ModelLoadError(
            f"model '{cfg.name}': '{where}' is not in the local Hugging Face cache "
            "and the hub cannot be reached. Use the packaged models (model=small or "
            "model=medium) or point model.path at a local model directory."
        ) from None
    except ValueError as err:
        if "custom code" in str(err) or "trust_remote_code" in str(err):
            raise ModelLoadError(
                f"model '{cfg.name}': '{where}' needs its own Python code to load, "
                "and metagen runs no model code unless the model file sets "
                "trust_remote_code: true (do that only for code you have read)"
            ) from None
        raise ModelLoadError(
            f"model '{cfg.name}': '{where}' is not a causal language model "
            f"({first_line(err)})"
        ) from None
    return model, tokenizer


def _check_model_dir(cfg: ModelConfig, local: Path) -> None:
    """A local dir needs a config and safetensors weights: pickles are never read."""
    where = f"model '{cfg.name}': model.path '{local}'"
    if not (local / "config.json").is_file():
        raise ModelLoadError(
            f"{where} has no config.json; point it at a directory written by "
            "save_pretrained (config.json, model.safetensors, tokenizer files)"
        )
    if not any(local.glob("*.safetensors")):
        raise ModelLoadError(
            f"{where} has no .safetensors weights; save the model with "
            "save_pretrained, which writes them (metagen never loads pickled "
            ".bin or .pt weights)"
        )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (False when HF_HUB_OFFLINE is set)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True  # a proxy may reach what a direct connection cannot
    url = urlparse(constants.ENDPOINT)
    address = (url.hostname or "huggingface.co", url.port or 443)
    try:
        socket.create_connection(address, timeout=timeout).close()
    except OSError:
        return False
    return True


def _build_random(cfg: ModelConfig, dtype: torch.dtype):
    donor = _donor_config(cfg.tokenizer_from)
    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir(donor))
    context = cfg.context_length or 1024
    shape = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if cfg.arch == "gpt2":
        config = GPT2Config(
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_embd=cfg.n_embd,
            n_positions=context,
            **shape,
        )
    elif cfg.arch == "llama":
        config = LlamaConfig(
            num_hidden_layers=cfg.n_layer,
            num_attention_heads=cfg.n_head,
            num_key_value_heads=cfg.n_head,
            hidden_size=cfg.n_embd,
            intermediate_size=4 * cfg.n_embd,
            max_position_embeddings=context,
            **shape,
        )
    else:
        raise ModelLoadError(
            f"model '{cfg.name}': unknown arch '{cfg.arch}' (llama, gpt2)"
        )
    torch.manual_seed(cfg.init_seed)  # the same seed gives the same weights
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model, tokenizer


def _donor_config(name: str) -> ModelConfig:
    from omegaconf import OmegaConf

    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.exists():
        raise ModelLoadError(
            f"tokenizer_from: no model config '{name}' in {path.parent}"
        )
    raw = OmegaConf.load(path)
    raw.pop("defaults", None)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), raw))

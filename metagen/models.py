"""Load generator and scorer models: packaged GGUF, hub id or local dir, random init.

Packaged GGUF files take ~15-50 s to dequantize (mostly tokenizer conversion), so the
first load converts them once into a safetensors + tokenizer cache that later loads
read in about a second.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from metagen.config import DeviceConfig, ModelConfig
from metagen.devices import resolve_device, resolve_dtype
from metagen.errors import UserError

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DONE_MARKER = "metagen-cache.json"


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


def cache_root() -> Path:
    return Path(os.environ.get("METAGEN_CACHE", Path.home() / ".cache" / "metagen"))


def load_model(cfg: ModelConfig, device_cfg: DeviceConfig) -> LanguageModel:
    """Load one model onto the configured device, in eval mode."""
    device, dtype = resolve_device(device_cfg.device), resolve_dtype(device_cfg.dtype)
    start = time.perf_counter()
    if cfg.path:
        model, tokenizer = _load_pretrained(cfg, cfg.path, dtype)
    elif cfg.source == "package":
        model, tokenizer = _load_pretrained(cfg, str(packaged_model_dir(cfg)), dtype)
    elif cfg.source == "random":
        model, tokenizer = _build_random(cfg, dtype)
    else:
        raise ModelLoadError(
            f"model '{cfg.name}': source '{cfg.source}' needs model.path "
            "(a hub id or a local directory)"
        )
    model.to(device).eval()
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
    if (
        cfg.path
        and not local.exists()
        and (where.startswith((".", "/", "~")) or where.count("/") > 1)
    ):
        raise ModelLoadError(f"model '{cfg.name}': model.path '{where}' does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            where, trust_remote_code=cfg.trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            where,
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=cfg.trust_remote_code,
        )
    except OSError as err:
        if local.is_dir():
            raise ModelLoadError(
                f"model '{cfg.name}': '{where}' is not a causal LM directory with "
                f"safetensors weights and a tokenizer ({_first_line(err)})"
            ) from None
        raise ModelLoadError(
            f"model '{cfg.name}': '{where}' is not in the local Hugging Face cache "
            "and the hub cannot be reached. Use the packaged models (model=small or "
            "model=medium) or point model.path at a local model directory."
        ) from None
    except ValueError as err:
        raise ModelLoadError(
            f"model '{cfg.name}': '{where}' is not a causal language model "
            f"({_first_line(err)})"
        ) from None
    return model, tokenizer


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def packaged_model_dir(cfg: ModelConfig) -> Path:
    """The cache dir of a packaged GGUF model, converting it on first use."""
    key = f"{cfg.package}-{cfg.package_version}-{Path(cfg.file).stem}"
    target = cache_root() / "models" / key
    if _cache_is_valid(target):
        return target
    if target.exists():
        log.warning("cache entry %s is incomplete or corrupt: rebuilding it", target)
        shutil.rmtree(target, ignore_errors=True)
    log.info("converting %s from its GGUF package into %s (once)", cfg.name, target)
    gguf_path = _find_gguf(cfg)
    staging = target.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    try:
        _convert_gguf(gguf_path, staging)
        try:
            os.replace(staging, target)  # atomic: a crash leaves only the staging dir
        except OSError:
            if not _cache_is_valid(target):  # someone else's finished copy wins
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _find_gguf(cfg: ModelConfig) -> Path:
    spec = importlib.util.find_spec(cfg.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"model '{cfg.name}': package '{cfg.package}' is not installed; "
            "run `make run` or `make test` to set up the environment"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    if (package_dir / cfg.file).exists():
        return package_dir / cfg.file
    # Chunked packages (gemma) assemble the GGUF file and check its sha256.
    module = importlib.import_module(cfg.package)
    out = cache_root() / "gguf" / cfg.file
    return Path(module.assemble(out))


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True)
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, dtype=torch.float32, **kwargs
    )
    # The GGUF loader flags the model as quantized, which blocks save_pretrained;
    # the weights are already dequantized floats, so the flag can go.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    sizes = {p.name: p.stat().st_size for p in out_dir.iterdir() if p.is_file()}
    (out_dir / DONE_MARKER).write_text(
        json.dumps({"source": str(gguf_path), "sizes": sizes})
    )


def _cache_is_valid(target: Path) -> bool:
    """A cache entry is trusted only if it finished and no file was truncated."""
    marker = target / DONE_MARKER
    if not marker.exists():
        return False
    try:
        sizes = json.loads(marker.read_text())["sizes"]
    except (ValueError, KeyError):
        return False
    return all(
        (target / name).exists() and (target / name).stat().st_size == size
        for name, size in sizes.items()
    )


def _build_random(cfg: ModelConfig, dtype: torch.dtype):
    if not cfg.tokenizer_from:
        raise ModelLoadError(f"model '{cfg.name}': a random model needs tokenizer_from")
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

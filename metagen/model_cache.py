"""The packaged GGUF models, converted once into a safetensors + tokenizer cache.

Dequantizing a GGUF file takes ~15-50 s (mostly tokenizer conversion); reading the
converted safetensors back takes about a second, with bit-identical logits.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from metagen.config import ModelConfig
from metagen.errors import UserError

log = logging.getLogger(__name__)

DONE_MARKER = "metagen-cache.json"


def cache_root() -> Path:
    return Path(os.environ.get("METAGEN_CACHE", Path.home() / ".cache" / "metagen"))


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
        raise UserError(
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

"""Bad model paths and checkpoints fail clearly; nothing untrusted is unpickled or
run."""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import (
    CONF,
    CPU,
    FAST,
    ROOT,
    assert_clean_failure,
    cli,
    compose_config,
    fail_run,
    table_files,
)
from safetensors.torch import save_file

from metagen import models as models_module
from metagen.models import ModelLoadError, load_model

# ------------------------------------------------------------------- models


def test_hub_model_without_network(tmp_path):
    # A closed local port stands for "no network" on any machine, an empty HF_HOME
    # for an empty cache; the user must get one message, not a page of retries.
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    offline["HF_HUB_OFFLINE"] = "0"
    result = cli(tmp_path / "run", *FAST, "model=gpt2", env=offline)
    assert_clean_failure(result, "model 'gpt2'", "hub cannot be reached")
    assert "Retrying" not in result.stdout + result.stderr
    assert table_files(tmp_path) == []


def test_bad_scorer_path_fails_before_generating(tmp_path):
    scorer = ["+model@scorers.mine=tiny", "scorers.mine.name=mine"]
    scorer.append(f"scorers.mine.path={tmp_path}/typo")
    fail_run(scorer, tmp_path / "run", f"model.path '{tmp_path}/typo' does not exist")


def tiny_checkpoint(folder: Path, tokenizer_dir: Path) -> Path:
    """A 1-layer Llama dir in safetensors with small's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=64,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class _Trap:
    """Unpickling this creates a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def load_path(path: Path):
    cfg = compose_config(["model=tiny", f"model.path={path}"]).model
    return load_model(cfg, CPU)


def test_model_path_that_does_not_exist(tmp_path):
    with pytest.raises(ModelLoadError, match=f"model.path '{tmp_path}/nope' does not"):
        load_path(tmp_path / "nope")


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match=f"model.path '{tmp_path}' has no config"):
        load_path(tmp_path)


def test_directory_of_a_model_that_is_not_causal(tmp_path, small_cache_entry):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(small_cache_entry / name, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    save_file({"weight": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="not a causal"):
        load_path(tmp_path)


def test_safetensors_checkpoint_loads(tmp_path, small_cache_entry):
    lm = load_path(tiny_checkpoint(tmp_path / "ok", small_cache_entry))
    assert lm.n_params > 0


def test_pickled_weights_are_refused(tmp_path, small_cache_entry, monkeypatch):
    folder = tiny_checkpoint(tmp_path / "bin", small_cache_entry)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "UNPICKLED"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load called: weights were unpickled")

    monkeypatch.setattr(torch, "load", no_torch_load)
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_path(folder)
    assert not marker.exists()


@pytest.mark.parametrize("model_type", ["llama", "evil"])
def test_remote_code_never_runs(model_type, tmp_path, small_cache_entry):
    """A dir asking for its own code: the built-in class loads it, or it is refused."""
    folder = tiny_checkpoint(tmp_path / "remote", small_cache_entry)
    marker = tmp_path / "REMOTE_CODE_RAN"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForCausalLM": "evil.EvilModel",
        "AutoTokenizer": ["evil.EvilTokenizer", None],
    }
    (folder / "config.json").write_text(json.dumps(config))
    if model_type == "llama":
        assert type(load_path(folder).model).__name__ == "LlamaForCausalLM"
    else:
        with pytest.raises(ModelLoadError, match="trust_remote_code"):
            load_path(folder)
    assert not marker.exists()


def test_corrupt_cache_entry_is_rebuilt(
    tmp_path, small_cache_entry, monkeypatch, caplog
):
    entry = tmp_path / "models" / small_cache_entry.name
    shutil.copytree(small_cache_entry, entry)
    weights = entry / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size // 2)  # a killed copy, a full disk
    monkeypatch.setenv("METAGEN_CACHE", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="metagen.models"):
        lm = load_model(compose_config(["model=small"]).model, CPU)
    assert "incomplete or corrupt: rebuilding" in caplog.text
    assert weights.stat().st_size == size
    assert lm.n_params > 100e6


# ----------------------------------------------------------------- security


MODEL_FILES = sorted((CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
def test_trust_remote_code_is_off_unless_the_file_sets_it(path):
    raw = yaml.safe_load(path.read_text())
    cfg = compose_config([f"model={path.stem}"])
    assert cfg.model.trust_remote_code is bool(raw.get("trust_remote_code", False))
    assert cfg.model.trust_remote_code is False  # no shipped file turns it on


def test_loading_passes_the_flags(monkeypatch):
    seen = {}

    def tokenizer(*args, **kwargs):
        seen["tokenizer"] = kwargs

    def model(*args, **kwargs):
        seen["model"] = kwargs
        raise RuntimeError("stop here")

    monkeypatch.setattr(models_module.AutoTokenizer, "from_pretrained", tokenizer)
    monkeypatch.setattr(models_module.AutoModelForCausalLM, "from_pretrained", model)
    with pytest.raises(RuntimeError, match="stop here"):
        load_model(compose_config(["model=gpt2"]).model, CPU)
    assert seen["tokenizer"]["trust_remote_code"] is False
    assert seen["model"]["trust_remote_code"] is False
    assert seen["model"]["use_safetensors"] is True


def test_cache_holds_no_pickles(small_cache_entry):
    pickles = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
    assert not [p for p in small_cache_entry.iterdir() if p.suffix in pickles]


UNSAFE = [
    r"\bpickle\b", r"torch\.load\(", r"\binstantiate\(", r"yaml\.load\(",
    r"unsafe_load", r"(?<![.\w])eval\(", r"(?<![.\w])exec\(",
    r"trust_remote_code\s*=\s*True", r"weights_only\s*=\s*False",
]  # fmt: skip


def test_source_has_no_unsafe_loaders():
    for path in (ROOT / "metagen").rglob("*.py"):
        text = path.read_text()
        found = [pattern for pattern in UNSAFE if re.search(pattern, text)]
        assert not found, f"{path.relative_to(ROOT)} matches {found}"

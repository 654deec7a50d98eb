"""Shared fixtures and helpers: composed configs, models loaded once per session, and
the real command line with the checks every bad-input test makes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from metagen.config import CONF_DIR, DeviceConfig
from metagen.errors import UserError
from metagen.models import LanguageModel, load_model, packaged_model_dir
from metagen.pipeline import compose_config, compose_raw, run  # noqa: F401 (for tests)

CONF = CONF_DIR
CPU = DeviceConfig(name="cpu", device="cpu")


@pytest.fixture(scope="session")
def models() -> dict[str, LanguageModel]:
    """Lazily loaded models by config name, shared by the whole session."""

    class Pool(dict):
        def __missing__(self, name: str) -> LanguageModel:
            self[name] = load_model(compose_config([f"model={name}"]).model, CPU)
            return self[name]

    return Pool()


ROOT = CONF.parent
# The fastest real run: a 2-layer random generator that also scores, 3 prompts.
FAST = [
    "model=tiny",
    "model@scorers.small=tiny",
    "~model@scorers.medium",
    "prompts=quick",
    "sampler.max_new_tokens=5",
    "device=cpu",
]
# Every prompt holds every hazard, so whichever the page shows proves the escaping.
HOSTILE = [
    f"{opening} <script>alert('xss')</script> <img src=x onerror=\"alert(1)\"> "
    "Tom & Jerry's <b>bold</b>"
    for opening in ("Once", "Later", "Finally")
]


def cli(run_dir: Path, *overrides: str, env: dict | None = None, **kwargs):
    """`python -m metagen <overrides>` as a user runs it (no HYDRA_FULL_ERROR)."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    command = [sys.executable, "-m", "metagen", *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=600,
        **kwargs,
    )


def assert_clean_failure(result: subprocess.CompletedProcess, *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    for text in expected:
        assert text in output, output


def table_files(folder: Path) -> list[str]:
    """Parquet tables and temp files anywhere under folder."""
    return sorted(
        p.name
        for p in folder.rglob("*")
        if p.suffix in (".parquet", ".tmp") or p.name.endswith(".tmp")
    )


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder: proves tables were left untouched."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def fail_run(overrides: list[str], run_dir: Path, match: str) -> UserError:
    """A run with these overrides must stop with a UserError before any table."""
    cfg = compose_config(FAST + overrides)
    with pytest.raises(UserError, match=match) as caught:
        run(cfg, run_dir)
    if run_dir.exists():
        assert table_files(run_dir) == []
    return caught.value


@pytest.fixture(scope="session")
def small_cache_entry() -> Path:
    """The converted cache entry of `small` (converted once if missing)."""
    return packaged_model_dir(compose_config(["model=small"]).model)


@pytest.fixture(scope="session")
def hostile_run(tmp_path_factory, small_cache_entry) -> Path:
    """A real tiny run from the command line, its prompts full of HTML."""
    base = tmp_path_factory.mktemp("hostile")
    prompts = base / "hostile.yaml"
    prompts.write_text(yaml.safe_dump({"prompts": HOSTILE}), encoding="utf-8")
    run_dir = base / "run"
    result = cli(run_dir, *FAST, f"prompts.file={prompts}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    return run_dir


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".score_cache"))
    return target


def reference_logprob_sum(lm, prompt: str, text: str) -> tuple[float, int]:
    """Independent: encode prompt and prompt+text, one forward pass per text."""
    tok = lm.tokenizer
    context, continuation = prompt.rstrip(), prompt[len(prompt.rstrip()) :] + text
    ctx = tok.encode(context, add_special_tokens=False)
    whole = tok.encode(context + continuation, add_special_tokens=False)
    bos = [tok.bos_token_id] if tok("a").input_ids[0] == tok.bos_token_id else []
    ids = bos + whole
    start = len(bos) + len(ctx)
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    total = sum(float(logp[i - 1, ids[i]]) for i in range(start, len(ids)))
    return total, len(ids) - start

"""Issue 7: bad input ends in one clear message; nothing lost, nothing untrusted runs.

Most cases run in process (compose the config, call the stage, expect a UserError
whose message names the field or file). A handful run the real command line to check
the whole contract: exit code != 0, the message on the console, no traceback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import CONF, CPU, compose_config, compose_raw
from hydra.errors import ConfigCompositionException, MissingConfigException
from safetensors.torch import save_file

from metagen import models as models_module
from metagen import pipeline, tables
from metagen.config import PromptsConfig
from metagen.devices import DeviceError
from metagen.errors import UserError
from metagen.generate import check_sampler
from metagen.models import ModelLoadError, load_model, packaged_model_dir
from metagen.pipeline import run, to_config
from metagen.prompts import load_prompts
from metagen.report import ReportError, build_report

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


# ---------------------------------------------------------------- helpers


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


# ------------------------------------------------- unknown names (Hydra's own)


@pytest.mark.parametrize(
    "group", ["model", "sampler", "prompts", "device", "experiment"]
)
def test_unknown_option_lists_the_available_ones(group):
    available = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    with pytest.raises(MissingConfigException) as caught:
        compose_raw([f"{group}=nope"])
    message = str(caught.value)
    assert f"Could not find '{group}/nope'" in message
    assert all(name in message for name in available), message


@pytest.mark.parametrize(
    "arguments,expected",
    [
        (["model=nope"], ["Could not find 'model/nope'", "tiny", "small"]),
        (["-m", "--cfg", "job"], ["Only one of --run, --multirun"]),
    ],
    ids=["unknown model", "-m with --cfg"],
)
def test_usage_error_on_the_command_line(arguments, expected, tmp_path):
    result = cli(tmp_path / "run", *arguments)
    assert_clean_failure(result, *expected)
    assert not (tmp_path / "run").exists()  # nothing written at all


@pytest.mark.parametrize(
    "override,match",
    [
        ("sampler.temprature=0.5", "Could not override 'sampler.temprature'"),
        ("sampler.top_k=abc", "sampler.top_k=abc"),
        ("seed=one", "seed=one"),
    ],
)
def test_misspelt_or_mistyped_override_is_hydras_error(override, match):
    with pytest.raises(ConfigCompositionException, match=match):
        compose_raw([override])


PLUS_CASES = [
    # Hydra's own hint for a typo is "use +sampler.temprature=..."; following it
    # must end in one line, not a traceback from the typed config.
    ("+sampler.temprature=0.5", r"sampler.temprature: Key .* check the spelling"),
    ("+seed2=3", "seed2: Key 'seed2' not in 'Config'"),
    ("prompts.prompts=['Costs ${price}']", r"prompts.prompts\[0\]: .*literal"),
]


@pytest.mark.parametrize("override,match", PLUS_CASES)
def test_bad_field_that_gets_past_hydra_is_a_user_error(override, match):
    with pytest.raises(UserError, match=match):
        to_config(compose_raw([override]))


# ------------------------------------------------------------- prompt files


def load_file(path: Path) -> tuple[str, list[str]]:
    return load_prompts(PromptsConfig(name="file", file=str(path)))


BAD_PROMPT_FILES = [
    ("missing", "gone.yaml", None, "no such file"),
    ("directory", "adir", "DIR", "is a directory"),
    ("not yaml", "p.yaml", b"- a\n b: [\n", "not valid YAML"),
    ("python tag", "p.yaml", b"!!python/object/apply:os.system ['touch PWNED']\n",
     "not valid YAML"),
    ("no prompts key", "p.yaml", b"name: mine\nprompt:\n  - hi\n",
     r"got a mapping with keys \['name', 'prompt'\]"),
    ("_target_ mapping", "p.yaml", b"_target_: os.system\ncommand: touch PWNED\n",
     "got a mapping with keys"),
    ("one string", "p.yaml", b"just a line of text\n", "single string"),
    ("empty file", "p.yaml", b"", "empty file"),
    ("empty list", "p.yaml", b"[]\n", "the prompt list is empty"),
    ("empty prompts key", "p.yaml", b"prompts: []\n", "the prompt list is empty"),
    ("blank prompt", "p.yaml", b"- fine\n- '   '\n", "prompt 2 of 2 is .*whitespace"),
    ("empty prompt", "p.yaml", b"- fine\n- ''\n", "prompt 2 of 2 is empty"),
    ("number", "p.yaml", b"- fine\n- 42\n", "prompt 2 of 2 is an int, not a string"),
    ("null", "p.yaml", b"- fine\n-\n", r"prompt 2 of 2 is empty \(null\)"),
    ("unquoted colon", "p.yaml", b"- Question: what is love\n",
     "prompt 1 of 1 is a mapping.*quote"),
    ("_target_ item", "p.yaml", b"- _target_: os.system\n  command: touch PWNED\n",
     "prompt 1 of 1 is a mapping"),
    ("latin-1", "p.yaml", b"- caf\xe9 au lait\n", r"not valid UTF-8 \(byte 5\)"),
    ("latin-1 txt", "p.txt", b"caf\xe9\n", "not valid UTF-8"),
    ("blank txt", "p.txt", b"\n   \n", "the prompt list is empty"),
    ("bad json line", "p.jsonl", b'{"prompt": "a"}\n{oops\n', "line 2 is not JSON"),
    ("no prompt field", "p.jsonl", b'{"text": "a"}\n', 'line 1 has no "prompt"'),
    ("json number", "p.jsonl", b'{"prompt": 3}\n', "is an int, not a string"),
    ("json _target_", "p.jsonl",
     b'{"prompt": {"_target_": "os.system", "command": "touch PWNED"}}\n',
     "is a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(
    "name,filename,content,match",
    BAD_PROMPT_FILES,
    ids=[c[0] for c in BAD_PROMPT_FILES],
)
def test_bad_prompt_file(name, filename, content, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a `touch PWNED` would land
    path = tmp_path / filename
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as caught:
        load_file(path)
    assert f"prompts.file {path}" in str(caught.value)  # names the file
    assert "\n" not in str(caught.value)  # one line
    assert not (tmp_path / "PWNED").exists()  # data, never executed


GOOD_PROMPT_FILES = [
    ("list.yaml", b"- One\n- Two\n"),
    ("mapping.yml", b"name: mine\nprompts:\n  - One\n  - Two\n"),
    ("lines.txt", b"One\n\nTwo\n"),
    ("windows.TXT", b"\xef\xbb\xbfOne\r\nTwo\r\n"),  # BOM, CRLF, upper-case suffix
    ("records.jsonl", b'{"prompt": "One"}\n\n{"prompt": "Two", "id": 7}\n'),
    ("bom.yaml", b"\xef\xbb\xbf- One\n- Two\n"),
]


@pytest.mark.parametrize("filename,content", GOOD_PROMPT_FILES)
def test_prompt_file_formats(filename, content, tmp_path):
    path = tmp_path / filename
    path.write_bytes(content)
    assert load_file(path) == (path.stem, ["One", "Two"])


def test_quoted_colon_and_markup_stay_text(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(["Question: what is ${oc.env:HOME}?", *HOSTILE]))
    assert load_file(path)[1] == ["Question: what is ${oc.env:HOME}?", *HOSTILE]


def test_duplicate_prompts_are_a_warning(tmp_path, caplog):
    path = tmp_path / "p.txt"
    path.write_text("One\nTwo\nOne\n")
    with caplog.at_level(logging.WARNING, logger="metagen.prompts"):
        assert load_file(path)[1] == ["One", "Two", "One"]
    assert "appear more than once" in caplog.text and "'One'" in caplog.text


def test_empty_inline_prompt_list(tmp_path):
    fail_run(["prompts.prompts=[]"], tmp_path, "prompts 'quick': the prompt list is")


def test_missing_prompt_file_on_the_command_line(tmp_path):
    result = cli(tmp_path / "run", *FAST, f"prompts.file={tmp_path}/nope.yaml")
    assert_clean_failure(result, f"prompts.file {tmp_path}/nope.yaml: no such file")
    assert result.stdout.count("[ERROR]") == 1  # one message, from metagen.jobs
    assert table_files(tmp_path) == []
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "no such file" in status["error"]


# ------------------------------------------------------------ sampler values


SAMPLER_VALUES = [
    ("sampler.temperature=0", "temperature must be > 0"),
    ("sampler.temperature=-0.5", "temperature must be > 0"),
    ("sampler.top_p=0", r"top_p must be in \(0, 1\]"),
    ("sampler.top_p=1.5", r"top_p must be in \(0, 1\]"),
    ("sampler.top_k=-1", "top_k must be >= 0"),
    ("sampler.min_p=-0.1", r"min_p must be in \[0, 1\]"),
    ("sampler.min_p=1.5", r"min_p must be in \[0, 1\]"),
    ("sampler.typical_p=0", r"typical_p must be in \(0, 1\]"),
    ("sampler.epsilon_cutoff=1", r"epsilon_cutoff must be in \[0, 1\)"),
    ("sampler.eta_cutoff=-0.1", r"eta_cutoff must be in \[0, 1\)"),
    ("sampler.max_new_tokens=0", "max_new_tokens must be > 0"),
    ("sampler.max_new_tokens=-5", "max_new_tokens must be > 0"),
    ("sampler.num_samples=0", "num_samples must be > 0"),
    ("sampler.num_beams=0", "num_beams must be >= 1"),
    ("sampler.repetition_penalty=0", "repetition_penalty must be > 0"),
]


@pytest.mark.parametrize("override,match", SAMPLER_VALUES)
def test_sampler_value_out_of_range(override, match, tmp_path):
    fail_run([override], tmp_path, match)


def test_sampler_message_shows_the_value(tmp_path):
    # In a sweep over top_p=1.5,2 the logs must tell the two failed jobs apart.
    fail_run(["sampler.top_p=1.5"], tmp_path, r"sampler.top_p=1.5: top_p must be")


def test_prompt_longer_than_the_context(tmp_path):
    long_prompt = " ".join(["word"] * 300)  # tiny holds 256 tokens
    fail_run([f"prompts.prompts=['{long_prompt}']"], tmp_path, "shorten the prompt")


def test_zero_temperature_is_fine_without_sampling():
    check_sampler(compose_config(["sampler=greedy", "sampler.temperature=0"]).sampler)


# ------------------------------------------------------------------- device


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


DEVICE_VALUES = [
    ("device=cuda", "device.device=cuda: no CUDA GPU"),
    ("device.device=cuda:1", "device.device=cuda:1: no CUDA GPU"),
    ("device=mps", "device.device=mps: no Apple MPS"),
    ("device.device=gpu", "device.device='gpu' is not one of"),
    ("device.dtype=int8", "device.dtype='int8': not supported"),
    ("device.batch_size=0", "device.batch_size=0: must be a positive"),
    ("device.batch_size=-4", "device.batch_size=-4: must be a positive"),
    ("device.batch_size=big", "device.batch_size='big': must be a positive"),
    ("device.num_threads=0", "device.num_threads=0: must be a positive"),
]


@pytest.mark.parametrize("override,match", DEVICE_VALUES)
def test_device_that_cannot_be_used(override, match, tmp_path, no_gpu):
    error = fail_run([override], tmp_path, match)
    assert isinstance(error, DeviceError)


def test_gpu_index_beyond_the_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    fail_run(["device.device=cuda:3"], tmp_path, "no such GPU; this machine has 1")


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


# ------------------------------------------------------------------- report


def test_report_escapes_hostile_prompts(hostile_run, tmp_path):
    run_dir = copy_run(hostile_run, tmp_path / "run")
    html = build_report(run_dir).read_text(encoding="utf-8")
    for raw in ("<script>alert", "<img src=x", "<b>bold</b>", 'onerror="alert'):
        assert raw not in html
    assert "&lt;script&gt;alert(" in html and "&lt;img src=x onerror=" in html
    assert "Tom &amp; Jerry" in html
    stored = pd.read_parquet(run_dir / "generations.parquet")["prompt"]
    assert set(stored) == set(HOSTILE)  # the tables keep the text as it was


def test_report_on_a_dir_without_runs(tmp_path):
    with pytest.raises(ReportError, match="no runs found"):
        build_report(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "metagen.report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_clean_failure(result, "no runs found under")
    assert list(tmp_path.iterdir()) == []


def two_runs(hostile_run: Path, root: Path) -> tuple[Path, Path]:
    return copy_run(hostile_run, root / "a"), copy_run(hostile_run, root / "b")


def test_report_with_a_corrupt_parquet(hostile_run, tmp_path):
    good, bad = two_runs(hostile_run, tmp_path)
    data = (bad / "scores.parquet").read_bytes()
    (bad / "scores.parquet").write_bytes(data[: len(data) // 2])
    before = fingerprint(good)
    html = build_report(tmp_path).read_text(encoding="utf-8")
    assert "scores.parquet unreadable" in html
    assert fingerprint(good) == before


def test_report_with_different_columns(hostile_run, tmp_path):
    old, new = two_runs(hostile_run, tmp_path)
    scores = pd.read_parquet(old / "scores.parquet")
    scores.drop(columns=["mean_entropy", "retokenized_same"]).to_parquet(
        old / "scores.parquet"
    )  # as an older version wrote it
    scores.assign(new_metric=1.0).to_parquet(new / "scores.parquet")
    build_report(tmp_path)
    merged = pd.read_parquet(tmp_path / "report" / "scores.parquet")
    assert len(merged) == 2 * len(scores)
    assert set(merged["run_dir"]) == {"a", "b"}


def test_report_with_a_run_that_only_generated(hostile_run, tmp_path):
    good, failed = two_runs(hostile_run, tmp_path)
    (failed / "scores.parquet").unlink()
    (failed / "summary.parquet").unlink()
    status = {"status": "failed", "error": "model 'x': model.path '/x' does not exist"}
    (failed / "status.json").write_text(json.dumps(status))
    html = build_report(tmp_path).read_text(encoding="utf-8")
    assert "does not exist" in html
    merged = pd.read_parquet(tmp_path / "report" / "generations.parquet")
    assert set(merged["run_dir"]) == {"a"}


def test_report_never_instantiates_what_outputs_hold(hostile_run, tmp_path):
    run_dir = copy_run(hostile_run, tmp_path / "run")
    marker = tmp_path / "PWNED"
    hostile = {"_target_": "os.system", "command": f"touch {marker}"}
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(hostile))
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps(status | {"extra": hostile}))
    build_report(run_dir)
    assert not marker.exists()


# ------------------------------------------ interrupts and tables on failure


def test_failed_rerun_leaves_the_tables_intact(hostile_run, tmp_path):
    run_dir = copy_run(hostile_run, tmp_path / "run")
    before = fingerprint(run_dir)
    with pytest.raises(UserError, match="top_p"):
        run(compose_config(FAST + ["sampler.top_p=2"]), run_dir)
    assert fingerprint(run_dir) == before


def test_interrupt_while_writing_leaves_no_table(tmp_path, monkeypatch):
    real_write = pq.write_table

    def write_then_interrupt(table, where, **kwargs):
        real_write(table, where, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C between the write and the rename

    monkeypatch.setattr(tables.pq, "write_table", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(compose_config(FAST), tmp_path)
    assert table_files(tmp_path) == []


def test_interrupt_while_scoring_keeps_generations(tmp_path, monkeypatch, caplog):
    real_score_panel = pipeline.score_panel

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "score_panel", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(compose_config(FAST), tmp_path)
    assert table_files(tmp_path) == ["generations.parquet"]
    generations = fingerprint(tmp_path)
    monkeypatch.setattr(pipeline, "score_panel", real_score_panel)
    with caplog.at_level(logging.INFO, logger="metagen.pipeline"):
        run(compose_config(FAST), tmp_path)
    assert "not generating again" in caplog.text
    assert (
        fingerprint(tmp_path)["generations.parquet"]
        == generations["generations.parquet"]
    )
    assert len(pd.read_parquet(tmp_path / "scores.parquet")) == 3


def test_ctrl_c_during_generation_then_rerun(tmp_path, small_cache_entry):
    run_dir = tmp_path / "run"
    # Slow enough to interrupt: 12 batches of 1, 32 tokens each (~1.5 s of decoding).
    overrides = [*FAST, "sampler.max_new_tokens=32", "sampler.num_samples=4"]
    overrides.append("device.batch_size=1")
    command = [sys.executable, "-m", "metagen", *overrides, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test runner started in the background inherits SIGINT ignored, and Python
        # then never turns it into KeyboardInterrupt: give the child the default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log_file = run_dir / "metagen.log"
    deadline = time.monotonic() + 300
    while not (log_file.exists() and "loaded tiny" in log_file.read_text()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never loaded its model"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert "Traceback" not in out + err
    assert "interrupted" in err
    assert table_files(run_dir) == []
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    rerun = cli(run_dir, *overrides)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert len(pd.read_parquet(run_dir / "scores.parquet")) == 12


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

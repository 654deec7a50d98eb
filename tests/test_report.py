"""The report over run dirs: files written, merging, escaping, broken runs, CLI.

`make_tables` and `make_run` build synthetic runs with every contract column;
test_analyze.py reuses `make_tables`.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from metagen.report import ReportError, build_report
from metagen.report.callback import ReportCallback
from metagen.report.merge import find_run_dirs

LlFunction = Callable[[int, int, str], float]
XSS_PROMPT = "<script>alert(1)</script> and <img src=x onerror=alert(1)> \"'&"


def default_ll(generator: str) -> LlFunction:
    """Per-byte LL: harder for later prompts, and a scorer favours its own text."""
    return lambda p, k, scorer: -1.0 - 0.1 * p - 0.02 * k + 0.2 * (scorer == generator)


def make_tables(
    generator: str = "small",
    scorers: Sequence[str] = ("small", "medium"),
    prompts: Sequence[str] = ("The ocean is", "Space is"),
    n_samples: int = 2,
    ll: LlFunction | None = None,
    text: Callable[[int, int], str] | None = None,
    sampler: str = "temperature",
    temperature: float = 0.8,
    run_id: str = "run0",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(generations, scores) for one run; scores follow `ll` in nats/byte."""
    ll = ll or default_ll(generator)
    text = text or (lambda p, k: f"{generator} continues prompt {p}, sample {k}.")
    generations, scores = [], []
    for p, prompt in enumerate(prompts):
        for k in range(n_samples):
            body = text(p, k)
            n_bytes = len(body.encode())
            n_new = n_bytes // 4
            gen_id = f"{run_id}-{p}-{k}"
            own = ll(p, k, generator) * n_bytes
            generations.append(
                {
                    "generation_id": gen_id, "run_id": run_id, "prompt_set": "test",
                    "prompt_id": p, "prompt": prompt, "sample_index": k,
                    "generator": generator, "sampler": sampler,
                    "temperature": temperature, "top_k": 0, "top_p": 1.0,
                    "min_p": 0.0, "typical_p": 1.0, "num_beams": 1, "seed": 7,
                    "max_new_tokens": 32, "dtype": "float32", "text": body,
                    "n_new_tokens": n_new,
                    "finish_reason": "length" if k % 2 else "eos",
                    "gen_seconds": 0.5 + 0.1 * p + 0.05 * k,
                    "gen_logprob_sum": own + 0.25,
                    "gen_token_ids": np.arange(n_new, dtype=np.int32),
                }
            )  # fmt: skip
            for scorer in scorers:
                scores.append(_score_row(generations[-1], scorer, ll(p, k, scorer)))
    return _typed(pd.DataFrame(generations)), _typed(pd.DataFrame(scores))


def _score_row(generation: dict, scorer: str, ll: float) -> dict:
    n_bytes = len(generation["text"].encode())
    n_tokens = n_bytes // 3
    total = ll * n_bytes
    nan = float("nan")
    mean = total / n_tokens if n_tokens else nan
    keep = ("generation_id", "run_id", "prompt_set", "prompt_id", "sample_index")
    keep += ("generator", "sampler", "temperature", "top_p", "seed")
    return {key: generation[key] for key in keep} | {
        "scorer": scorer, "n_tokens": n_tokens, "n_bytes": n_bytes,
        "n_chars": len(generation["text"]), "n_words": len(generation["text"].split()),
        "logprob_sum": total, "mean_logprob": mean, "perplexity": math.exp(-mean),
        "cross_entropy": -mean, "bits_per_byte": -ll / math.log(2) if n_bytes else nan,
        "mean_token_prob": math.exp(mean), "mean_entropy": 2.0 if n_tokens else nan,
        "greedy_match_frac": 0.5 if n_tokens else nan,
        "token_logprobs": np.full(n_tokens, mean, dtype=np.float32),
        "seq_mean_logprob": mean, "seq_perplexity": math.exp(-mean),
        "truncated": False,
        "retokenized_same": True if scorer == generation["generator"] else None,
    }  # fmt: skip


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    int32 = ["prompt_id", "sample_index", "top_k", "num_beams", "max_new_tokens"]
    int32 += ["n_new_tokens", "n_tokens", "n_bytes", "n_chars", "n_words"]
    return frame.astype({c: "int32" for c in int32 if c in frame.columns})


def make_run(
    run_dir: Path,
    tables: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    status: str = "completed",
    error: str | None = None,
) -> Path:
    """A run dir as the pipeline writes it."""
    generations, scores = tables if tables is not None else make_tables()
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("model: {name: small}\n")
    generations.to_parquet(run_dir / "generations.parquet")
    scores.to_parquet(run_dir / "scores.parquet")
    status_doc = {"status": status, "error": error, "config_hash": "abc123"}
    (run_dir / "status.json").write_text(json.dumps(status_doc))
    return run_dir


def _hostile_text(p: int, k: int) -> str:
    return "reply <script>alert(1)</script> \"'&" if p == 0 else f"text {p}.{k}"


def make_sweep(root: Path) -> Path:
    """Two runs: small and medium generate, both score; two temperatures.

    The first prompt and its texts carry markup; ties put them in the examples.
    """
    prompts = (XSS_PROMPT, "The ocean is", "Democracy requires")
    for index, (generator, temperature) in enumerate([("small", 0.5), ("medium", 1)]):
        tables = make_tables(
            generator, prompts=prompts, n_samples=3, text=_hostile_text,
            temperature=temperature, run_id=f"r{index}",
        )  # fmt: skip
        make_run(root / str(index), tables)
    return root


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return make_sweep(tmp_path / "sweep")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep whose report is built once, for tests that only read it."""
    root = make_sweep(tmp_path_factory.mktemp("built"))
    build_report(root)
    return root


FIGURES = ["ratio_hist", "matrix_heatmap", "perplexity_scatter", "preference_rates"]
FIGURES += ["ll_vs_temperature", "dashboard"]
CSVS = ["matrix", "self_preference", "preferences", "agreement"]


def test_report_writes_every_file(built: Path):
    out = built / "report"
    for name in FIGURES:
        for suffix in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{suffix}").stat().st_size > 1000
    for name in CSVS:
        assert not pd.read_csv(out / f"{name}.csv").empty, name
    assert not list(out.rglob("*.tmp"))
    generations = pd.read_parquet(out / "generations.parquet")
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(generations) == 2 * 9 and len(scores) == 2 * 9 * 2
    assert sorted(generations["run_dir"].unique()) == ["0", "1"]
    assert list(scores["token_logprobs"].iloc[0]) == pytest.approx(
        list(pd.read_parquet(built / "0" / "scores.parquet")["token_logprobs"].iloc[0])
    )


def test_report_page_states_findings_with_intervals(built: Path):
    markdown = (built / "report" / "report.md").read_text()
    assert markdown.index("## Findings") < markdown.index("## Tables")
    # Each scorer favours its own generator's text by 0.2 nats/byte, so the
    # interaction contrast is exactly 0.4 and every bootstrap replicate agrees.
    assert "Adjusted self-preference of medium and small: +0.400 nats/byte" in markdown
    assert "95% CI 0.400 to 0.400, 18 texts, 3 prompts" in markdown
    assert "Self-bias of small: +0.200 nats/byte" in markdown
    assert "gives the highest per-byte likelihood to 50% (95% CI" in markdown
    for section in ("Key insights", "Interesting examples", "Failed or broken runs"):
        assert f"## {section}" in markdown
    for name in FIGURES:
        assert f"(figures/{name}.png)" in markdown


def test_html_is_self_contained_and_escaped(built: Path):
    page = (built / "report" / "index.html").read_text()
    assert "<script" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&quot;&#x27;&amp;" in page
    assert page.count("data:image/png;base64,") == len(FIGURES)
    assert "http://" not in page and "https://" not in page
    markdown = (built / "report" / "report.md").read_text()
    assert "<script>" not in markdown


def test_run_discovery_skips_reports_and_hydra_dirs(built: Path, tmp_path: Path):
    (built / "0" / ".hydra" / "nested").mkdir(exist_ok=True)
    (built / "0" / ".hydra" / "nested" / "status.json").write_text("{}")
    # The default report dir holds merged tables; it is skipped even when the
    # new report goes elsewhere.
    runs = find_run_dirs(built, skip=tmp_path / "elsewhere")
    assert runs == [built / "0", built / "1"]


def test_broken_runs_are_listed_not_fatal(sweep: Path):
    make_run(sweep / "failed", status="failed", error="CUDA out of memory")
    corrupt = make_run(sweep / "corrupt")
    (corrupt / "scores.parquet").write_bytes(b"PAR1 this is not parquet")
    partial = make_run(sweep / "partial")
    for name in ("scores.parquet", "status.json", ".hydra/config.yaml"):
        (partial / name).unlink()  # only generations.parquet is left

    page = build_report(sweep).read_text()
    markdown = (sweep / "report" / "report.md").read_text()
    broken = markdown[markdown.index("## Failed or broken runs") :]
    assert "failed: status failed: CUDA out of memory" in broken
    assert "corrupt: scores.parquet unreadable" in broken
    assert "partial: status.json missing; scores.parquet missing" in broken
    assert "CUDA out of memory" in page
    scores = pd.read_parquet(sweep / "report" / "scores.parquet")
    generations = pd.read_parquet(sweep / "report" / "generations.parquet")
    assert len(scores) == 2 * 9 * 2  # the broken runs add no scores
    assert len(generations) == 2 * 9 + 2 * 4  # corrupt and partial keep theirs


def test_single_scorer_run_with_an_empty_text(tmp_path: Path):
    text = lambda p, k: "" if (p, k) == (0, 0) else f"text {p}.{k}"  # noqa: E731
    run = make_run(tmp_path / "run", make_tables(scorers=["small"], text=text))
    markdown = build_report(run).with_name("report.md").read_text()
    assert "Self-bias" not in markdown  # one generator: nothing to compare with
    assert "| small | 3 | " in markdown  # per-scorer table: 3 texts scored ...
    assert " | 1 |\n" in markdown  # ... and 1 empty text counted, not scored

    matrix = pd.read_csv(run / "report" / "matrix.csv")
    assert matrix["n"].tolist() == [3, 3]  # the empty text is not scored


def test_a_lone_broken_run_still_gets_a_report(tmp_path: Path):
    run = make_run(tmp_path / "run")
    (run / "generations.parquet").write_bytes(b"\x00garbage")
    (run / "scores.parquet").write_bytes(b"\x00garbage")
    index = build_report(run)
    assert "generations.parquet unreadable" in index.read_text()
    assert (run / "report" / "figures" / "dashboard.png").exists()


def test_no_runs_is_a_report_error(tmp_path: Path):
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    with pytest.raises(ReportError, match="no runs found"):
        build_report(tmp_path / "empty")
    with pytest.raises(ReportError, match="not a directory"):
        build_report(tmp_path / "missing")


def test_cli_reports_a_missing_dir_in_one_line(tmp_path: Path):
    result = _cli(str(tmp_path / "nonexistent"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_cli_builds_a_report(tmp_path: Path):
    run = make_run(tmp_path / "run", make_tables(scorers=["small"], n_samples=1))
    result = _cli(str(run), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "out" / "index.html") in last_line


def _cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "metagen.report", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_callback_rebuilds_the_sweep_report(built: Path, caplog):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(built)}}})
    with caplog.at_level(logging.INFO):
        ReportCallback().on_multirun_end(config)
    index = built / "report" / "index.html"
    assert caplog.records[-1].getMessage() == f"Report: {index}"
    assert str(index) in caplog.records[-2].getMessage()  # build_report's last line
    assert "Found 2 runs" in caplog.text  # the earlier report is not a run


def test_callback_never_raises(tmp_path: Path, caplog):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    ReportCallback().on_multirun_end(config)
    assert "Report for" in caplog.text and "no runs found" in caplog.text

"""The report over run dirs: files written, merging, escaping, broken runs, CLI."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from synthetic import XSS_PROMPT, make_run, make_tables

from metagen.report import ReportError, build_report
from metagen.report.callback import ReportCallback
from metagen.report.merge import find_run_dirs


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

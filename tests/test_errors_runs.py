"""Reports on broken or hostile runs, and interrupts: nothing written is lost or
left half-written."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import (
    FAST,
    HOSTILE,
    ROOT,
    assert_clean_failure,
    cli,
    compose_config,
    copy_run,
    fingerprint,
    table_files,
)

from metagen import pipeline, tables
from metagen.errors import UserError
from metagen.pipeline import run
from metagen.report import ReportError, build_report

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

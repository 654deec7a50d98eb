"""Sweeps: parallel and cluster launchers, failure isolation, resume, killed jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import FAST as TINY  # the fastest real run


def sweep(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metagen", "-m", *TINY, *args,
         f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def statuses(sweep_dir: Path) -> dict[str, dict]:
    return {
        p.parent.name: json.loads(p.read_text())
        for p in sorted(sweep_dir.glob("*/status.json"))
    }


def mtimes(sweep_dir: Path) -> dict[str, int]:
    files = [*sweep_dir.glob("*/*.parquet"), *sweep_dir.glob("*/status.json")]
    # The report is rebuilt on every launch; the jobs' own files must not be.
    return {str(p): p.stat().st_mtime_ns for p in files if p.parent.name != "report"}


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local"],
    ],  # fmt: skip
    ids=["joblib", "submitit_local"],
)
def test_four_job_sweep_completes_and_is_reported(tmp_path, launcher):
    done = sweep(tmp_path, *launcher, "seed=0,1,2,3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert [s["status"] for s in statuses(tmp_path).values()] == ["completed"] * 4
    merged = pd.read_parquet(tmp_path / "report" / "generations.parquet")
    assert len(merged) == 4 * 3 and merged["seed"].nunique() == 4
    assert (tmp_path / "report" / "index.html").is_file()
    assert "Report: " in done.stdout.strip().splitlines()[-1]


def test_a_failed_job_does_not_stop_the_others(tmp_path):
    done = sweep(tmp_path, "sampler.temperature=0.8,-1,1.2")
    assert done.returncode == 1
    assert "1 job(s) failed" in done.stderr
    found = statuses(tmp_path)
    assert [s["status"] for s in found.values()] == ["completed", "failed", "completed"]
    assert "temperature must be > 0" in found["1"]["error"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Failed or broken runs" in report and "temperature must be" in report


def test_resume_skips_finished_jobs_and_redoes_deleted_ones(tmp_path):
    assert sweep(tmp_path, "seed=0,1").returncode == 0
    before = mtimes(tmp_path)
    again = sweep(tmp_path, "seed=0,1")
    assert again.returncode == 0
    assert mtimes(tmp_path) == before  # no table or status rewritten: nothing redone
    assert again.stdout.count("already completed") == 2
    (tmp_path / "1" / "scores.parquet").unlink()
    assert sweep(tmp_path, "seed=0,1").returncode == 0
    after = mtimes(tmp_path)
    assert all(after[p] == t for p, t in before.items() if "/0/" in p)
    assert (tmp_path / "1" / "scores.parquet").is_file()
    forced = sweep(tmp_path, "seed=0,1", "resume=false")
    assert forced.returncode == 0 and "already completed" not in forced.stdout


def test_killed_job_leaves_no_readable_partial_table_and_rerun_fixes_it(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "metagen", "model=small", "prompts=quick",
            "device=cpu", f"hydra.run.dir={run_dir}"]  # fmt: skip
    job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run_dir / "metagen.log"
    deadline = time.time() + 300
    while time.time() < deadline and "generated" not in _read(log):
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGKILL)  # during scoring, or while writing a table
    job.wait()
    for table in run_dir.glob("*.parquet"):  # whatever is visible must be whole
        assert pq.read_table(table).num_rows > 0
    kept_generations = (run_dir / "generations.parquet").exists()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "running"
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert len(pd.read_parquet(run_dir / "scores.parquet")) == 3 * 2
    if kept_generations:  # a stage that finished before the kill is not redone
        assert "not generating again" in _read(log)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""

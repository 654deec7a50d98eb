"""End to end: a real run writes the three tables; the CLI behaves as designed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import compose_config, reference_logprob_sum

from metagen.jobs import completed
from metagen.pipeline import run
from metagen.score import METRICS_VERSION

TINY = ["model=tiny", "model@scorers.small=tiny", "~model@scorers.medium",
        "prompts=quick", "sampler.max_new_tokens=6", "device=cpu"]  # fmt: skip


def read(run_dir: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(run_dir / f"{name}.parquet")


def test_small_quick_run_matches_an_independent_computation(models, tmp_path):
    cfg = compose_config(["model=small", "prompts=quick", "device=cpu"])
    run(cfg, tmp_path / "run", tmp_path / "cache")
    gens, scores = (
        read(tmp_path / "run", "generations"),
        read(tmp_path / "run", "scores"),
    )
    assert len(gens) == 3 and len(scores) == 6
    assert len(read(tmp_path / "run", "summary")) > 0
    assert sorted(scores["scorer"].unique()) == ["medium", "small"]
    texts = dict(zip(gens["generation_id"], zip(gens["prompt"], gens["text"])))
    for row in scores.itertuples():
        expected, n = reference_logprob_sum(
            models[row.scorer], *texts[row.generation_id]
        )
        assert row.n_tokens == n
        assert abs(row.logprob_sum - expected) <= 1e-3
        assert row.n_bytes == len(texts[row.generation_id][1].encode("utf-8"))
    own = scores[scores["scorer"] == "small"].merge(gens, on="generation_id")
    assert own["retokenized_same"].notna().all()
    same = own[own["retokenized_same"]]
    gap = (same["logprob_sum"] - same["gen_logprob_sum"]).abs()
    assert (gap < 1e-3).all()
    assert scores.loc[scores["scorer"] == "medium", "retokenized_same"].isna().all()


def test_same_config_gives_the_same_tables(tmp_path):
    cfg = compose_config(TINY)
    run(cfg, tmp_path / "a", None)
    run(cfg, tmp_path / "b", None)
    for name, timing in (("generations", "gen_seconds"), ("scores", "score_seconds")):
        a = read(tmp_path / "a", name).drop(columns=[timing])
        b = read(tmp_path / "b", name).drop(columns=[timing])
        pd.testing.assert_frame_equal(a, b)


def test_finished_stages_are_not_redone(tmp_path, caplog):
    cfg = compose_config(TINY)
    run(cfg, tmp_path, None)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.parquet")}
    caplog.set_level("INFO")
    run(cfg, tmp_path, None)
    assert "not generating again" in caplog.text and "not scoring again" in caplog.text
    assert (tmp_path / "generations.parquet").stat().st_mtime_ns == before[
        tmp_path / "generations.parquet"
    ]
    changed = compose_config([*TINY, "+model@scorers.extra=nanogpt-small"])
    run(changed, tmp_path, None)  # a new scorer: generation is reused, scoring redone
    assert (tmp_path / "generations.parquet").stat().st_mtime_ns == before[
        tmp_path / "generations.parquet"
    ]
    assert set(read(tmp_path, "scores")["scorer"]) == {"tiny", "nanogpt-small"}


def test_new_score_definitions_redo_scores_but_not_generations(
    tmp_path, caplog, monkeypatch
):
    """Scores made under older metric definitions are neither reused from a run's
    table, nor from the score cache, nor by a sweep's finished-job skip."""
    cfg, cache = compose_config(TINY), tmp_path / "cache"
    run(cfg, tmp_path / "run", cache)
    assert completed(tmp_path / "run", "x") is False  # no status here: not a job
    monkeypatch.setattr("metagen.score.METRICS_VERSION", METRICS_VERSION + 1)
    caplog.set_level("INFO")
    run(cfg, tmp_path / "run", cache)
    assert "not generating again" in caplog.text
    assert "not scoring again" not in caplog.text
    assert "taken from the score cache" not in caplog.text
    status = {"status": "completed", "config_hash": "x", "metrics_version": 1}
    (tmp_path / "run" / "status.json").write_text(json.dumps(status))
    assert completed(tmp_path / "run", "x") is False


def metagen_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "metagen", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_run_writes_tables_and_status(tmp_path):
    done = metagen_cli(*TINY, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("generations", "scores", "summary"):
        assert (tmp_path / "run" / f"{name}.parquet").is_file()
    assert '"status": "completed"' in (tmp_path / "run" / "status.json").read_text()
    assert "bits/byte" in done.stdout + done.stderr


def test_console_script_matches_python_m(tmp_path):
    script = Path(sys.executable).with_name("metagen")
    if not script.exists():
        pytest.fail("the metagen console script is not installed")
    shown = subprocess.run(
        [script, "--cfg", "job", "model=medium"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "name: medium" in shown.stdout
    assert (
        shown.stdout == metagen_cli("--cfg", "job", "model=medium", cwd=tmp_path).stdout
    )

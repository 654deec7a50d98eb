"""The benchmark's own parts run: the notebook's loop and the matmul peak (no timing
is asserted; bench.py measures)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from conftest import compose_config

from metagen.packed import PackedLinear

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from reference import reference_cell  # noqa: E402
from workload import matmul_flops  # noqa: E402


def test_reference_loop_runs_on_pytorchs_kernels_and_restores_the_packed_ones(models):
    lm = models["tiny"]
    sampler = compose_config(["sampler=top_p", "sampler.max_new_tokens=4"]).sampler
    layers = [m for m in lm.model.modules() if isinstance(m, PackedLinear)]
    rows, seconds = reference_cell(lm, sampler, ["Once upon", "The sea"], [lm], 0)
    assert [r["prompt"] for r in rows] == ["Once upon", "The sea"]
    for row in rows:
        metrics = row[lm.name]
        assert metrics["token_count"] > 0 and math.isfinite(metrics["likelihood"])
        loss = metrics["cross_entropy"]
        assert metrics["perplexity"] == pytest.approx(math.exp(loss))
    assert seconds["generate"] > 0 and seconds["score"] > 0
    assert layers and all(layer.enabled for layer in layers)


def test_matmul_peak_is_measured_on_the_models_shapes(models):
    assert matmul_flops(models["tiny"], rows=8, repeats=1) > 0

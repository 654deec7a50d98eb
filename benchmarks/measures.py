"""The benchmark's measurements, one function per figure; bench.py runs them."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from reference import reference_cell
from workload import (
    Models,
    device,
    matmul_flops,
    prompts,
    run_config,
    run_pipeline,
)

from metagen.generate import generate
from metagen.likelihood import score_texts, scoring_requests
from metagen.models import load_model
from metagen.pipeline import compose_config

STAGES = ("generate", "score")
GRID = [(g, s) for g in ("small", "medium") for s in ("temperature", "top_p")]

T0 = time.perf_counter()


def note(message: str) -> None:
    """Progress on stderr, so a slow machine shows where the time goes."""
    print(f"[{time.perf_counter() - T0:6.1f} s] {message}", file=sys.stderr, flush=True)


def best_of(repeats: int, fn) -> float:
    """The fastest of `repeats` timed calls: other load on the machine only adds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def end_to_end(models: Models, n_prompts: int) -> tuple[dict, list]:
    """Reference loop vs pipeline, cell by cell, alternating which side goes first."""
    ps = prompts(n_prompts)
    stages = {f"{side}_{stage}": 0.0 for side in ("ref", "pipe") for stage in STAGES}
    total = dict(ref=0.0, pipe=0.0)
    pairs: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as cache:  # shared by the grid, as in a sweep
        for k, (gen, samp) in enumerate(GRID):
            cfg = run_config(gen, samp, ps)
            scorers = [models.get(s.name) for s in cfg.scorers.values()]
            for side in ("ref", "pipe") if k % 2 == 0 else ("pipe", "ref"):
                start = time.perf_counter()
                if side == "ref":
                    _, split = reference_cell(
                        models.get(gen), cfg.sampler, ps, scorers, cfg.seed
                    )
                else:
                    _, made, split = run_pipeline(models, cfg, Path(cache))
                    pairs += made
                total[side] += time.perf_counter() - start
                for stage in STAGES:
                    stages[f"{side}_{stage}"] += split[stage]
                note(f"{gen}/{samp}: {side} {time.perf_counter() - start:.1f} s")
    figures = dict(
        end_to_end_speedup=total["ref"] / total["pipe"],
        reference_seconds=total["ref"],
        pipeline_seconds=total["pipe"],
        stage_seconds=stages,
    )
    return figures, pairs


def scoring_mfu(models: Models, name: str, pairs, repeats: int) -> dict:
    lm = models.get(name)
    # The tokens that go through the model (one pass where both metrics share it).
    tokens = sum(len(r.ids) for r in scoring_requests(lm, pairs).run)
    peak = matmul_flops(lm, repeats=2)  # right before the timing: load drifts
    seconds = best_of(repeats, lambda: score_texts(lm, pairs, 16))
    achieved = 2.0 * lm.n_params * tokens / seconds
    return dict(
        mfu=achieved / peak, tokens_per_s=tokens / seconds, peak_gflops=peak / 1e9
    )


def generation_mfu(models: Models, name: str) -> dict:
    """At the default batch size (16); the peak is the compute-bound one (256 rows),
    with the rate at the decoding shape (16 rows) alongside for context."""
    lm = models.get(name)
    sampler = compose_config(["sampler=temperature"]).sampler
    ps = prompts(16)
    peak = matmul_flops(lm, repeats=2)
    start = time.perf_counter()
    rows = generate(lm, ps, sampler, 0, 16)
    seconds = time.perf_counter() - start
    tokens = sum(len(r.token_ids) for r in rows)
    achieved = 2.0 * lm.n_params * tokens / seconds
    return dict(
        mfu=achieved / peak,
        tokens_per_s=tokens / seconds,
        peak_gflops=peak / 1e9,
        rows16_gflops=matmul_flops(lm, rows=16, repeats=2) / 1e9,
    )


def load_ratio(name: str) -> dict:
    """Cold: GGUF conversion into an empty cache, then load. Cached: load from it."""
    cfg = compose_config([f"model={name}"]).model
    saved = os.environ.get("METAGEN_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["METAGEN_CACHE"] = tmp
        try:
            cold = best_of(1, lambda: load_model(cfg, device()))
            cached = best_of(2, lambda: load_model(cfg, device()))
        finally:
            if saved is None:
                del os.environ["METAGEN_CACHE"]
            else:
                os.environ["METAGEN_CACHE"] = saved
    return dict(ratio=cached / cold, cold_s=cold, cached_s=cached)


def bf16_scoring(models: Models, name: str, pairs, repeats: int) -> dict:
    fp32, bf16 = models.get(name), models.get(name, "bfloat16")
    score_texts(bf16, pairs[:2], 16)  # first bfloat16 kernels' setup, untimed
    rows: dict[str, list] = {}
    seconds: dict[str, float] = {}
    # Interleaved, so load from other processes that comes and goes hits both.
    for key, lm in [("fp32", fp32), ("bf16", bf16)] * repeats:
        start = time.perf_counter()
        rows[key] = score_texts(lm, pairs, 16)
        elapsed = time.perf_counter() - start
        seconds[key] = min(seconds.get(key, elapsed), elapsed)
    a, b = (np.array([r["bits_per_byte"] for r in rows[k]]) for k in ("fp32", "bf16"))
    return dict(
        speedup=seconds["fp32"] / seconds["bf16"],
        bpb_abs_diff=float(np.nanmean(np.abs(a - b))),
        fp32_s=seconds["fp32"],
        bf16_s=seconds["bf16"],
    )


def scaling(models: Models, base: int) -> dict:
    """Pipeline seconds at 1x, 2x, 4x the prompts; the slope of log time on log n."""
    sizes = [base, 2 * base, 4 * base]
    times = [
        run_pipeline(models, run_config("small", "temperature", prompts(n)), None)[0]
        for n in sizes
    ]  # no score cache: each size scores all its texts
    slope = float(np.polyfit(np.log(sizes), np.log(times), 1)[0])
    return dict(exponent=slope, sizes=sizes, seconds=times)


def warm(models: Models, name: str) -> None:
    """One tiny generate and score per model, so no side pays first-call setup."""
    lm = models.get(name)
    sampler = compose_config(["sampler=temperature", "sampler.max_new_tokens=2"])
    generate(lm, prompts(2), sampler.sampler, 0, 2)
    score_texts(lm, [("Hello", " world")], 16)

"""The benchmark's workload: configs, preloaded models, prompts, peak FLOP/s."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

import metagen.pipeline as pipeline
from metagen.config import Config, DeviceConfig
from metagen.models import LanguageModel, load_model
from metagen.packed import PackedLinear, pack_linears

# 60 distinct prompts: the default 15 and three rephrasings of each.
OPENERS = ["", "In short, ", "Some say that ", "It is often said that "]


def prompts(n: int) -> list[str]:
    base = pipeline.compose_config([]).prompts.prompts
    pool = [o + (p[0].lower() + p[1:] if o else p) for o in OPENERS for p in base]
    if n > len(pool):
        raise ValueError(f"the benchmark has {len(pool)} distinct prompts, not {n}")
    return pool[:n]


def device(dtype: str = "float32", batch_size: object = 16) -> DeviceConfig:
    return DeviceConfig(name="cpu", device="cpu", dtype=dtype, batch_size=batch_size)


class Models:
    """Every model loaded once per dtype and shared by both sides of every figure."""

    def __init__(self):
        self.loaded: dict[tuple[str, str], LanguageModel] = {}
        self.load_seconds: dict[str, float] = {}

    def get(self, name: str, dtype: str = "float32") -> LanguageModel:
        key = (name, dtype)
        if key not in self.loaded:
            start = time.perf_counter()
            cfg = pipeline.compose_config([f"model={name}"]).model
            self.loaded[key] = load_model(cfg, device(dtype))
            self.load_seconds[f"{name}/{dtype}"] = time.perf_counter() - start
        return self.loaded[key]

    @contextlib.contextmanager
    def serving_pipeline(self):
        """Make pipeline.run take models from here instead of loading them again."""
        saved = pipeline.load_model
        pipeline.load_model = lambda cfg, dev: self.get(cfg.name, dev.dtype)
        try:
            yield
        finally:
            pipeline.load_model = saved


def run_pipeline(
    models: Models, cfg: Config, cache: Path | None
) -> tuple[float, list[tuple[str, str]], dict[str, float]]:
    """Seconds for one metagen run (generate, score, analyze, tables) in a fresh dir,
    the (prompt, text) pairs it generated, and its own per-stage seconds."""
    with tempfile.TemporaryDirectory() as tmp, models.serving_pipeline():
        start = time.perf_counter()
        result = pipeline.run(cfg, Path(tmp) / "run", cache)
        seconds = time.perf_counter() - start
        if result.status != "completed":
            raise RuntimeError(f"pipeline run {result.status}: {result.error}")
        table = pd.read_parquet(Path(tmp) / "run" / "generations.parquet")
    return seconds, list(zip(table["prompt"], table["text"])), result.seconds


def run_config(model: str, sampler: str, prompt_list: list[str]) -> Config:
    cfg = pipeline.compose_config(
        [f"model={model}", f"sampler={sampler}", "device=cpu"]
    )
    cfg.prompts.prompts = list(prompt_list)
    cfg.prompts.name = f"bench{len(prompt_list)}"
    return cfg


def matmul_flops(lm: LanguageModel, rows: int = 256, repeats: int = 3) -> float:
    """float32 FLOP/s on this model's own linear shapes, weighted as the model has them.

    Each distinct weight shape is timed on `rows` input rows in every way torch
    offers here (x @ W.T, W @ x.T, oneDNN's packed linear: the fastest counts), and
    weighted by how often the model has it: the matmul rate this model could reach
    with its weights in cache.
    """
    shapes: dict[tuple[int, int], int] = {}
    for module in lm.model.modules():
        if isinstance(module, (torch.nn.Linear, PackedLinear)):
            shape = (module.out_features, module.in_features)
            shapes[shape] = shapes.get(shape, 0) + 1
    flops = seconds = 0.0
    for (out_f, in_f), count in shapes.items():
        layer = torch.nn.Linear(in_f, out_f, bias=False)
        w, x = layer.weight.detach(), torch.randn(rows, in_f)
        ways = [lambda x=x, w=w: F.linear(x, w), lambda x=x, w=w: w @ x.T]
        if pack_linears(wrapper := torch.nn.Sequential(layer)):
            ways.append(lambda x=x, m=wrapper: m(x))
        best = float("inf")
        with torch.inference_mode():
            for fn in ways:
                fn()  # warm the kernel choice and the cache
                for _ in range(repeats):
                    start = time.perf_counter()
                    fn()
                    best = min(best, time.perf_counter() - start)
        flops += 2.0 * rows * in_f * out_f * count
        seconds += best * count
    return flops / seconds

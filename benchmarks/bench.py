"""Side-by-side benchmark: python benchmarks/bench.py [--quick] [--json PATH].

Every ratio is measured in this one process on the same workload. Models are loaded
once, before any timing, and shared by both sides, so load time is excluded from both
(the cached_load_ratio figure measures loading on its own).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning. On a shared machine a spinning
# thread takes the core its preempted partner needs, and every parallel op waits at
# the barrier: measured 4-5x slower generation and scoring here under load. Set
# before torch loads libgomp; metagen's entry point sets the same default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measures import (  # noqa: E402
    bf16_scoring,
    end_to_end,
    generation_mfu,
    load_ratio,
    note,
    scaling,
    scoring_mfu,
    warm,
)
from workload import Models  # noqa: E402

TARGETS = {
    "end_to_end_speedup": (">=", 10.0),
    "scoring_mfu": (">=", 0.6),
    "generation_mfu": (">=", 0.25),
    "cached_load_ratio": ("<=", 0.1),
    "bf16_scoring_speedup": (">=", 1.8),
    "bf16_bpb_abs_diff": ("<=", 0.01),
    "scaling_exponent": ("<=", 1.1),
}


def measure(quick: bool) -> dict:
    models = Models()
    n = 5 if quick else 15
    repeats = 2 if quick else 3
    named = ["small"] if quick else ["small", "medium"]
    out: dict = dict(
        quick=quick,
        cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        load_average_start=os.getloadavg()[0],
    )
    for name in ("small", "medium"):
        warm(models, name)
    note(f"models loaded and warm: {models.load_seconds}")
    e2e, pairs = end_to_end(models, n)
    out.update(e2e)
    for name in named:
        out[f"scoring_{name}"] = scoring_mfu(models, name, pairs, repeats)
        note(f"scoring {name}: {out[f'scoring_{name}']}")
        out[f"generation_{name}"] = generation_mfu(models, name)
        note(f"generation {name}: {out[f'generation_{name}']}")
        out[f"load_{name}"] = load_ratio(name)
        note(f"load {name}: {out[f'load_{name}']}")
        out[f"bf16_{name}"] = bf16_scoring(models, name, pairs, repeats - 1)
        note(f"bf16 {name}: {out[f'bf16_{name}']}")
    out["scaling"] = scaling(models, n)
    note(f"scaling: {out['scaling']}")
    out["load_average_end"] = os.getloadavg()[0]
    out["model_load_seconds"] = models.load_seconds
    headline(out, named)
    return out


def headline(out: dict, named: list[str]) -> None:
    """One number per target: the worst model, so a pass holds for every model."""
    worst_low = lambda key, field: min(out[f"{key}_{m}"][field] for m in named)  # noqa: E731
    out["scoring_mfu"] = worst_low("scoring", "mfu")
    out["generation_mfu"] = worst_low("generation", "mfu")
    out["cached_load_ratio"] = max(out[f"load_{m}"]["ratio"] for m in named)
    out["bf16_scoring_speedup"] = worst_low("bf16", "speedup")
    out["bf16_bpb_abs_diff"] = max(out[f"bf16_{m}"]["bpb_abs_diff"] for m in named)
    out["scaling_exponent"] = out["scaling"]["exponent"]


def table(out: dict) -> str:
    lines = [f"{'figure':<22} {'value':>10} {'target':>9}  result"]
    for key, (op, goal) in TARGETS.items():
        value = out[key]
        ok = value >= goal if op == ">=" else value <= goal
        lines.append(
            f"{key:<22} {value:>10.3f} {op + str(goal):>9}  {'pass' if ok else 'FAIL'}"
        )
    lines.append(f"{'cores':<22} {out['cores']:>10}")
    lines.append(f"{'torch_threads':<22} {out['torch_threads']:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 prompts, small only")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = measure(args.quick)
    out["bench_seconds"] = time.perf_counter() - start
    print(table(out))
    print(f"(bench took {out['bench_seconds']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=_plain))


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    main()

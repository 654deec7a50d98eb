"""oneDNN-packed weights for the linear layers of a CPU model.

PyTorch runs a float32 nn.Linear on the CPU through MKL's sgemm, which streams the
weights poorly when few rows come in: a decoding step at batch 5 read SmolLM2's
weights at ~6 GB/s here, no faster than at batch 16. oneDNN's linear, with each
weight reordered once into its blocked layout, measured 2.4x faster at batch 5,
2x at batch 16 and 1.3x at 256 rows (212 vs 160 GFLOP/s) on this CPU, for the same
float32 arithmetic (results differ from MKL's by rounding only: ~1e-6 relative).

The packed copy sits beside the original weight, which stays the module's
parameter: state, tying and parameter counts are untouched. Autograd, other
devices and inputs of another dtype take the plain path.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

DTYPES = (torch.float32, torch.bfloat16)


class PackedLinear(torch.nn.Module):
    """An nn.Linear's forward on a oneDNN-packed copy of its weight."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        with torch.no_grad():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, None)

        self._blocks: dict[int, list[tuple[int, PackedLinear]]] = {}
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            not self.enabled
            or torch.is_grad_enabled()
            or x.dtype != self.weight.dtype
            or x.device.type != "cpu"
        ):
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(
            x, self.packed, self.bias, "none", [], ""
        )

    def row_blocks(self, size: int) -> list[tuple[int, PackedLinear]]:
        """This layer cut into `size` output features each (first feature, layer),
        packed once: the scorer's vocabulary is projected a cache-sized block at a
        time."""
        if size not in self._blocks:
            self._blocks[size] = [
                (start, PackedLinear(_rows(self, start, start + size)))
                for start in range(0, self.out_features, size)
            ]
        return self._blocks[size]


def pack_linears(model: torch.nn.Module) -> int:
    """Swap every CPU float32/bfloat16 nn.Linear of `model` for a PackedLinear.

    Returns how many were swapped: 0 where oneDNN is missing or fails its check,
    or where the packed copies would not fit in half the free memory.
    """
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear
        and child.weight.device.type == "cpu"
        and child.weight.dtype in DTYPES
    ]
    if not targets or not _works(targets[0][2]) or not _room_for(targets):
        return 0
    packed: dict[int, PackedLinear] = {}  # a module used twice is packed once
    for parent, name, child in targets:
        if id(child) not in packed:
            packed[id(child)] = PackedLinear(child)
        setattr(parent, name, packed[id(child)])
    return len(packed)


@contextlib.contextmanager
def plain_linears(model: torch.nn.Module):
    """PyTorch's own linear for the duration: for the benchmark's notebook loop and
    for tests that check the packed path against it."""
    layers = [m for m in model.modules() if isinstance(m, PackedLinear)]
    for layer in layers:
        layer.enabled = False
    try:
        yield
    finally:
        for layer in layers:
            layer.enabled = True


def _room_for(targets) -> bool:
    """The packed copies fit in half the free memory (a model near the machine's
    memory runs on the plain path instead of swapping)."""
    weights = {id(child.weight): child.weight for _, _, child in targets}.values()
    needed = sum(w.numel() * w.element_size() for w in weights)
    free = free_memory()
    if free is None or needed <= free / 2:  # unknown on this OS: assume room
        return True
    log.info(
        "not packing linear weights: %.1f GB more would leave too little of the "
        "%.1f GB free memory; using PyTorch's own kernels",
        needed / 1e9,
        free / 1e9,
    )
    return False


def free_memory() -> int | None:
    """Bytes of memory available to a new allocation (page cache counts as free)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _works(linear: torch.nn.Linear) -> bool:
    """oneDNN is there and agrees with F.linear on this layer (else: plain path)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        x = torch.randn(3, linear.in_features, dtype=linear.weight.dtype)
        with torch.inference_mode():
            got, want = PackedLinear(linear)(x), F.linear(x, linear.weight, linear.bias)
    except (RuntimeError, AttributeError) as err:  # an old or odd build
        log.info("oneDNN linear unavailable, using the plain one: %s", err)
        return False
    tol = 1e-3 if linear.weight.dtype == torch.float32 else 5e-2
    return bool(torch.allclose(got.float(), want.float(), rtol=tol, atol=tol))


def _rows(layer: PackedLinear, start: int, end: int) -> torch.nn.Linear:
    weight = layer.weight[start:end]
    part = torch.nn.Linear(layer.in_features, len(weight), bias=layer.bias is not None)
    part.weight = torch.nn.Parameter(weight, requires_grad=False)
    if layer.bias is not None:
        part.bias = torch.nn.Parameter(layer.bias[start:end], requires_grad=False)
    return part

"""oneDNN-packed weights for the linear layers of a CPU model.

PyTorch runs a float32 nn.Linear on the CPU through MKL's sgemm, which streams the
weights poorly when few rows come in: a decoding step at batch 5 read SmolLM2's
weights at ~6 GB/s here, no faster than at batch 16. oneDNN's linear, with each
weight reordered once into its blocked layout, measured 2.4x faster at batch 5,
2x at batch 16 and 1.3x at 256 rows (212 vs 160 GFLOP/s) on this CPU, for the same
float32 arithmetic (results differ from MKL's by rounding only: ~1e-6 relative).

The packed copy sits beside the original weight, which stays the module's
parameter: state, tying and parameter counts are untouched. Autograd, other
devices, inputs of another dtype and a weight changed after packing take the
plain path. Pack last, once the model has its final device and dtype.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

DTYPES = (torch.float32, torch.bfloat16)
# Vocabulary rows per block of a packed output head: scoring projects one block at a
# time, so each block's logits stay in cache (see vocab.py).
HEAD_BLOCK = 4096


class PackedLinear(torch.nn.Module):
    """An nn.Linear's forward on a oneDNN-packed copy of its weight; a vocabulary
    head also keeps its rows packed in blocks of HEAD_BLOCK for scoring."""

    def __init__(self, linear: torch.nn.Linear, head: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.enabled = True
        self._source = _identity(self.weight)
        self.packed = _pack(self.weight)
        self.blocks = [_block(self, start) for start in range(0, self.out_features,
                       HEAD_BLOCK)] if head else []  # fmt: skip

    def usable(self, x: torch.Tensor) -> bool:
        """Whether the packed copy may serve x (else PyTorch's own linear)."""
        return (
            self.enabled
            and not torch.is_grad_enabled()
            and x.dtype == self.weight.dtype
            and x.device.type == "cpu"
            and _identity(self.weight) == self._source
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.usable(x):
            return F.linear(x, self.weight, self.bias)
        return linear(x, self.packed, self.bias)


def linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None):
    """x @ W.T + b on a weight packed by _pack."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


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
    head = _output_head(model)
    if not targets or not _room_for(targets, head) or not _works(targets[0][2]):
        return 0
    packed: dict[int, PackedLinear] = {}  # a module used twice is packed once
    for parent, name, child in targets:
        if id(child) not in packed:
            packed[id(child)] = PackedLinear(child, head=child is head)
        setattr(parent, name, packed[id(child)])
    return len(packed)


@contextlib.contextmanager
def plain_linears(model: torch.nn.Module):
    """PyTorch's own linear for the duration: for the benchmark's notebook loop and
    for tests that check the packed path against it."""
    layers = [m for m in model.modules() if isinstance(m, PackedLinear)]
    before = [layer.enabled for layer in layers]
    for layer in layers:
        layer.enabled = False
    try:
        yield
    finally:
        for layer, enabled in zip(layers, before):
            layer.enabled = enabled


def free_memory() -> int | None:
    """Bytes a new allocation can take: available memory (page cache counts as
    free), or what is left under a container's limit if that is less."""
    found = []
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    cgroup = Path("/sys/fs/cgroup")
    with contextlib.suppress(OSError, ValueError):
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((cgroup / "memory.current").read_text()))
    return min(found) if found else None


def _room_for(targets, head: torch.nn.Linear | None) -> bool:
    """The packed copies (a head's twice: whole and in blocks) fit in half the free
    memory; a model near the machine's memory keeps the plain path."""
    weights = {id(child.weight): child.weight for _, _, child in targets}
    needed = sum(w.numel() * w.element_size() for w in weights.values())
    if head is not None and id(head.weight) in weights:
        needed += head.weight.numel() * head.weight.element_size()
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


def _works(layer: torch.nn.Linear) -> bool:
    """oneDNN is there and agrees with F.linear on this layer (else: plain path)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        x = torch.randn(3, layer.in_features, dtype=layer.weight.dtype)
        with torch.inference_mode():
            got = linear(x, _pack(layer.weight), layer.bias)
            want = F.linear(x, layer.weight, layer.bias)
    except (RuntimeError, AttributeError) as err:  # an old or odd build
        log.info("oneDNN linear unavailable, using the plain one: %s", err)
        return False
    tol = 1e-3 if layer.weight.dtype == torch.float32 else 5e-2
    return bool(torch.allclose(got.float(), want.float(), rtol=tol, atol=tol))


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def _block(layer: PackedLinear, start: int) -> tuple:
    """(first row, packed rows, their bias) of a head's block at `start`."""
    rows = slice(start, start + HEAD_BLOCK)
    bias = None if layer.bias is None else layer.bias[rows].detach()
    return start, _pack(layer.weight[rows]), bias


def _identity(weight: torch.Tensor) -> tuple:
    """Changes when the weight is replaced or written in place after packing."""
    return weight.data_ptr(), weight._version, weight.dtype


def _output_head(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The vocabulary projection, if the model has one as a plain nn.Linear."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if type(head) is torch.nn.Linear else None

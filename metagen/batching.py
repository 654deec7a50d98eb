"""Batches for both stages: length-sorted buckets and an automatic batch size.

`device.batch_size=auto` reaches the stages as batch_size=None: start from a batch
as large as the work (capped) and halve it whenever a batch runs out of memory,
keeping the smaller size for the rest of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

log = logging.getLogger(__name__)

# The first batch tried by batch_size=None. Beyond ~64 rows a CPU gains nothing (the
# matmuls are already compute-bound) and a GPU backs off from here if it must.
AUTO_START = 64

T = TypeVar("T")


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest batch first.

    Rows inside a batch keep their input order, so a batch that holds everything
    is exactly the unsorted batch (same padding, same random draws).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [
        sorted(order[at : at + batch_size]) for at in range(0, len(order), batch_size)
    ]


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA/MPS OOM errors, and the CPU allocator's failure to get memory."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def run_in_batches(
    lengths: Sequence[int],
    batch_size: int | None,
    run: Callable[[list[int]], list[T]],
) -> list[T]:
    """run(indices) over length-sorted batches; results in input order.

    batch_size=None is the automatic size: a batch that runs out of memory is
    retried at half the size, with the RNG state it started from, so the retry
    draws what a smaller batch size would have drawn from the start.
    """
    size = batch_size or min(AUTO_START, max(len(lengths), 1))
    results: list[T | None] = [None] * len(lengths)
    pending = length_buckets(lengths, size)
    while pending:
        batch = pending.pop(0)
        rng = _rng_state()
        try:
            rows = run(batch)
        except (RuntimeError, MemoryError) as err:
            if batch_size is not None or len(batch) == 1 or not is_out_of_memory(err):
                raise
            _free_memory()
            _set_rng_state(rng)
            size = max(1, len(batch) // 2)
            log.warning("batch of %d ran out of memory: using %d", len(batch), size)
            rest = batch + [i for b in pending for i in b]
            pending = _buckets_of(rest, lengths, size)
            continue
        for i, row in zip(batch, rows):
            results[i] = row
    return results  # type: ignore[return-value]


def _buckets_of(indices: list[int], lengths: Sequence[int], size: int):
    """length_buckets over a subset of the indices."""
    local = length_buckets([lengths[i] for i in indices], size)
    return [sorted(indices[j] for j in batch) for batch in local]


def _rng_state():
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _free_memory() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()

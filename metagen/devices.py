"""Resolve the `device` config group into torch objects; fail loudly, no fallback."""

from __future__ import annotations

import torch

from metagen.errors import UserError

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class DeviceError(UserError):
    """The configured device, dtype or batch size cannot be used here."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        return _cuda(name)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(
                "device.device=mps: no Apple MPS device is available here; "
                "use device=cpu or device=auto"
            )
        return torch.device("mps")
    raise DeviceError(
        f"device.device='{name}' is not one of auto, cpu, cuda, cuda:N, mps; "
        "pick one with device=auto|cpu|cuda|mps"
    )


def _cuda(name: str) -> torch.device:
    """cuda or cuda:N, only where that GPU exists (never a silent CPU fallback)."""
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device.device={name}: no CUDA GPU is available here; "
            "use device=cpu or device=auto"
        )
    index = name.partition(":")[2]
    if not index:
        return torch.device("cuda")
    count = torch.cuda.device_count()
    if not index.isdigit() or int(index) >= count:
        raise DeviceError(
            f"device.device={name}: no such GPU; this machine has {count} "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise DeviceError(
            f"device.dtype='{name}': not supported; use one of {', '.join(DTYPES)}"
        )
    return DTYPES[name]


def check_batch_size(value: object) -> int | None:
    """An int > 0, or None for "auto"."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DeviceError(
            f"device.batch_size={value!r}: must be a positive integer or 'auto'; "
            "e.g. device.batch_size=8"
        )
    return value


def set_threads(num_threads: int | None) -> None:
    if num_threads is not None:
        if num_threads <= 0:
            raise DeviceError(
                f"device.num_threads={num_threads}: must be a positive integer, "
                "or null for torch's default"
            )
        torch.set_num_threads(num_threads)

"""Where and in what precision tensors are computed: CUDA when present; bfloat16 autocast on request."""

from __future__ import annotations

import torch

PRECISIONS = ("bf16", "fp32")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available; use device=cpu or auto")
    return torch.device(name)


def autocast_for(device: torch.device, precision: str):
    """bfloat16 autocast when ``precision == "bf16"``, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def describe_device(device: torch.device) -> str:
    """What ran the computation, for the record: "cpu" or e.g. "cuda (NVIDIA H100 80GB HBM3)"."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type

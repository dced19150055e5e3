"""Where and in what precision tensors are computed: CUDA when present; bfloat16 autocast on request,
where the hardware computes bfloat16 natively."""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("bf16", "fp32")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available; use device=cpu or auto")
    return torch.device(name)


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether this machine's ``device_type`` ("cpu" or "cuda") computes bfloat16 at full speed.

    On a CPU that means oneDNN's bf16 kernels (AVX512 or AMX); on an AVX2-only CPU autocast emulates
    bf16, and DenseNet121 inference ran 7x slower than in fp32 (918 vs 135 ms/image, 2-core EPYC).
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return torch.backends.cpu.get_cpu_capability() not in ("DEFAULT", "AVX2", "NO AVX")


def effective_precision(precision: str, device: torch.device | str) -> str:
    """The precision actually used: "bf16" only where asked for and computed natively, else "fp32"."""
    device_type = torch.device(device).type
    if precision != "bf16" or native_bf16(device_type):
        return precision
    _warn_emulated_bf16(device_type)
    return "fp32"


@functools.cache
def _warn_emulated_bf16(device_type: str) -> None:
    log.warning("bf16 was asked for, but this %s has no native bfloat16 support (emulated bf16 is several "
                "times slower): computing in fp32", device_type.upper())


def autocast_for(device: torch.device, precision: str):
    """bfloat16 autocast when ``precision == "bf16"`` and the device computes it natively, else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=effective_precision(precision, device) == "bf16")


def describe_device(device: torch.device) -> str:
    """What ran the computation, for the record: "cpu" or e.g. "cuda (NVIDIA H100 80GB HBM3)"."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type

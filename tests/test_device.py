"""Tests of pneumoscan.device: bf16 only where the hardware computes it natively."""

from __future__ import annotations

import torch

from pneumoscan import device as device_module
from pneumoscan.device import autocast_for, effective_precision


def test_bf16_falls_back_to_fp32_without_native_support(monkeypatch):
    monkeypatch.setattr(device_module, "native_bf16", lambda device_type: False)
    assert effective_precision("bf16", "cpu") == "fp32"
    assert effective_precision("fp32", "cpu") == "fp32"
    with autocast_for(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_is_used_where_native(monkeypatch):
    monkeypatch.setattr(device_module, "native_bf16", lambda device_type: True)
    assert effective_precision("bf16", "cpu") == "bf16"
    with autocast_for(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast_for(torch.device("cpu"), "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32

"""Tests of pneumoscan.device: bf16 only where the hardware computes it natively; CPU steal time."""

from __future__ import annotations

import torch

from pneumoscan import device as device_module
from pneumoscan.device import autocast_for, cpu_times, effective_precision, steal_share


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



def test_steal_share_is_the_stolen_part_of_all_cpu_time_between_two_readings():
    #                  user nice system idle iowait irq softirq steal guest guest_nice
    before = cpu_times("cpu  1000 0 100 800 0 0 0 100 0 0\ncpu0 500 0 50 400 0 0 0 50 0 0\n")
    after = cpu_times("cpu  1500 0 150 900 0 0 0 450 0 0\ncpu0 750 0 75 450 0 0 0 225 0 0\n")
    assert before == (100, 2000) and after == (450, 3000)
    assert steal_share(before, after) == 0.35  # 350 of the 1000 jiffies in between went to other guests
    assert steal_share(None, after) is None and steal_share(after, after) is None
    now = steal_share(cpu_times())  # on Linux, the share since the line above; elsewhere no reading at all
    assert now is None or 0.0 <= now <= 1.0

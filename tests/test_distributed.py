"""Tests of pneumoscan.distributed: torchrun with the gloo backend, 2 processes against 1 on phantoms."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from tests.conftest import LIGHT_CHECKS

from pneumoscan.distributed import BatchNormOverRanks, DropoutOverRanks, Ranks, batch_wide
from pneumoscan.models.checkpoint import load_model

# both stages, with dropout and the tail's BatchNorm training: one process and two must still agree (the layers
# that would see only a rank's slice of the batch are swapped for batch-wide ones)
TINY = ["--model", "densenet121", "--weights", "none", "--set", "image_size=64", "train_views=2",
        "head.epochs=2", "tail.epochs=2", "batch_size=16", "workers=0", "n_boot=30",
        "val_fraction=0.25", "shift_report=false", "threshold_on=val", "precision=fp32",
        *[f"input_checks.{key}={value}" for key, value in LIGHT_CHECKS.items()]]


def test_every_rank_takes_its_own_rows_of_a_global_batch():
    for n in (1, 7, 32):
        parts = [Ranks(rank=r, world=3).local_rows(n) for r in range(3)]
        covered = np.concatenate([np.arange(n)[p] for p in parts])
        assert covered.tolist() == list(range(n)) and max(p.stop - p.start for p in parts) - min(
            p.stop - p.start for p in parts) <= 1


def test_batch_wide_layers_hold_the_same_parameters_and_are_undone():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Dropout(0.3)))
    parameters, keys = [id(p) for p in model.parameters()], list(model.state_dict())
    two = Ranks(rank=0, world=2)
    batch_wide(model, two, torch.device("cpu"))
    assert type(model[1]) is BatchNormOverRanks and type(model[2][1]) is DropoutOverRanks and model[2][1].p == 0.3
    assert [id(p) for p in model.parameters()] == parameters and list(model.state_dict()) == keys
    batch_wide(model, two, torch.device("cpu"), undo=True)
    assert type(model[1]) is torch.nn.BatchNorm2d and type(model[2][1]) is torch.nn.Dropout
    assert [id(p) for p in model.parameters()] == parameters
    assert batch_wide(model, Ranks(), torch.device("cpu")) is model and type(model[1]) is torch.nn.BatchNorm2d


def _train(processes: int, root, out, cache) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                "--master-port", str(29500 + processes)] if processes > 1 else [sys.executable]
    command = launcher + ["-m", "pneumoscan.cli", "-q", "train", "--data", str(root), "--out", str(out), *TINY,
                          f"cache_dir={cache}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def _close_but_for_a_few_strays(a: torch.Tensor, b: torch.Tensor, *, rtol: float, atol: float, name: str) -> None:
    """At most 1% of the values (and at least one) outside the tolerance, and every value within 10 times it."""
    strays = int((~torch.isclose(a.float(), b.float(), rtol=rtol, atol=atol)).sum())
    assert strays <= max(1, a.numel() // 100), f"{name}: {strays} of {a.numel()} values differ"
    torch.testing.assert_close(a, b, rtol=10 * rtol, atol=10 * atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_with_the_same_global_batch(phantom_root, tmp_path):
    one = _train(1, phantom_root, tmp_path / "one", tmp_path / "cache")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _train(2, phantom_root, tmp_path / "two", tmp_path / "cache")
    assert two.returncode == 0, two.stderr[-2000:]
    history = {name: json.loads((tmp_path / name / "history.json").read_text()) for name in ("one", "two")}
    # gradients summed in another order: the losses agree to float noise; an AUC is a count of ranked pairs, and two
    # nearly tied scores that swap move it by 1 / (positives x negatives), 8.5e-4 on these 1,175 training pairs (seen
    # on an AVX2 CPU), so it may differ by a few pairs
    for a, b in zip(history["one"], history["two"], strict=True):  # every epoch's losses and metrics
        for key, tolerance in (("train_loss", 1e-4), ("train_auc", 3e-3), ("val_loss", 1e-4), ("val_auc", 3e-3)):
            assert a[key] == pytest.approx(b[key], abs=tolerance), key
    models = [load_model(tmp_path / name).model for name in ("one", "two")]
    # summation order; AdamW turns a near-zero gradient's float noise into a step of up to 2 x lr, and the running
    # statistics average activations of those weights. On an AVX2 CPU one weight in 36,864 of a layer ended 1.2e-3
    # away and 2 of 896 running means 2.5e-3: a few values may stray a little, none far (unaveraged gradients or
    # statistics move them all)
    for (key, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters(), strict=True):
        _close_but_for_a_few_strays(a, b, rtol=1e-3, atol=1e-3, name=key)
    for (key, a), (_, b) in zip(models[0].named_buffers(), models[1].named_buffers(), strict=True):
        _close_but_for_a_few_strays(a, b, rtol=1e-2, atol=1e-3, name=key)
    # the same split, written once by rank 0
    assert (tmp_path / "one" / "split.csv").read_text() == (tmp_path / "two" / "split.csv").read_text()
    assert (tmp_path / "two" / "train.log").read_text().count("pneumoscan train:") == 1

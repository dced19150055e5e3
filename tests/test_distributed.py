"""Tests of pneumoscan.distributed: torchrun with the gloo backend, 2 processes against 1 on phantoms."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pneumoscan.checkpoint import load_model
from pneumoscan.distributed import Ranks

# the head stage without dropout: nothing random differs between one process and two (the tail stage's
# BatchNorm statistics and dropout masks do, by a little: bench/scale.py measures that on real data)
TINY = ["--model", "densenet121", "--weights", "none", "--set", "image_size=64", "train_views=2", "stages=head",
        "head_epochs=3", "dropout_in=0", "dropout_hidden=0", "batch_size=16", "workers=0", "n_boot=30",
        "val_fraction=0.25", "shift_report=false", "threshold_on=val", "precision=fp32",
        "input_checks.made_per_kind=10", "input_checks.exposure_examples=20", "input_checks.resampled_examples=20"]


def test_every_rank_takes_its_own_rows_of_a_global_batch():
    for n in (1, 7, 32):
        parts = [Ranks(rank=r, world=3).local_rows(n) for r in range(3)]
        covered = np.concatenate([np.arange(n)[p] for p in parts])
        assert covered.tolist() == list(range(n)) and max(p.stop - p.start for p in parts) - min(
            p.stop - p.start for p in parts) <= 1


def _train(processes: int, root, out, cache) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                "--master-port", str(29500 + processes)] if processes > 1 else [sys.executable]
    command = launcher + ["-m", "pneumoscan.cli", "-q", "train", "--data", str(root), "--out", str(out), *TINY,
                          f"cache_dir={cache}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_with_the_same_global_batch(phantom_root, tmp_path):
    one = _train(1, phantom_root, tmp_path / "one", tmp_path / "cache")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _train(2, phantom_root, tmp_path / "two", tmp_path / "cache")
    assert two.returncode == 0, two.stderr[-2000:]
    history = {name: json.loads((tmp_path / name / "history.json").read_text()) for name in ("one", "two")}
    for a, b in zip(history["one"], history["two"], strict=True):  # every epoch's losses and metrics
        for key in ("train_loss", "train_auc", "val_loss", "val_auc"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    weights = [load_model(tmp_path / name).model.head.state_dict() for name in ("one", "two")]
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-3, atol=1e-4)  # summation order
    # the same split, written once by rank 0
    assert (tmp_path / "one" / "split.csv").read_text() == (tmp_path / "two" / "split.csv").read_text()
    assert (tmp_path / "two" / "train.log").read_text().count("pneumoscan train:") == 1

"""Tests of pneumoscan.distributed: torchrun with the gloo backend, 2 processes against 1 on phantoms."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pneumoscan.distributed import Ranks

TINY = ["--model", "densenet121", "--weights", "none", "--set", "image_size=64", "train_views=2", "head_epochs=2",
        "tail_epochs=2", "batch_size=16", "workers=0", "n_boot=30", "val_fraction=0.25", "shift_report=false",
        "threshold_on=val", "precision=fp32", "input_checks.made_per_kind=10", "input_checks.exposure_examples=20",
        "input_checks.resampled_examples=20"]


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
    metrics = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two")}
    aucs = [m["validation"]["at_threshold"]["auc"] for m in metrics.values()]
    assert abs(aucs[0] - aucs[1]) <= 0.002
    history = {name: json.loads((tmp_path / name / "history.json").read_text()) for name in ("one", "two")}
    assert len(history["one"]) == len(history["two"])
    # the same split, written once by rank 0
    assert (tmp_path / "one" / "split.csv").read_text() == (tmp_path / "two" / "split.csv").read_text()
    assert (tmp_path / "two" / "train.log").read_text().count("pneumoscan train:") == 1

"""What each robustness step bought: the ablation ladder behind the default recipe.

    python -m bench.robustness LABEL=RUN_DIR[:RULE[:tta]] ... [--merge]

RULE is val or val+shifts (default val): what the threshold is fitted on. ``tta`` scores every image
as the mean logit of the image and its mirror (``FlipAveraged`` below), validation and test alike.
``--merge`` keeps the rungs already in the results file (each names the commit it came from).

For every rung: the selection criterion, computed on validation only (mean and worst balanced
accuracy over clean validation and the 14 synthetic acquisition shifts, at the rung's threshold),
and then, reported after the choice was made, the rung's test metrics at that same threshold.
Writes ``bench/results/robustness.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.common import DATA, RESULTS, launch_commit, machine, write_result
from pneumoscan.checkpoint import load_model
from pneumoscan.data import evenly_spaced, read_split, scan_kaggle_split
from pneumoscan.device import pick_device
from pneumoscan.evaluate import binary_metrics, choose_threshold
from pneumoscan.evaluate.robustness import pool_with_shifts, selection_summary, shifted_logits
from pneumoscan.models import ScreeningNet
from pneumoscan.predict import predict_logits, sigmoid


class FlipAveraged(nn.Module):
    """Test-time augmentation: the mean logit of each image and its left-right mirror (one batched pass)."""

    def __init__(self, model: ScreeningNet):
        super().__init__()
        self.model = model
        self.preprocessing = model.preprocessing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = self.model(torch.cat([x, x.flip(-1)]))
        return both.view(2, len(x)).mean(0)


SHIFT_IMAGES = 400
RECORDED_SETTINGS = ("head_hidden", "dropout_in", "dropout_hidden", "head_lr", "tail_lr", "tail_fraction",
                     "weight_decay", "pos_weight", "train_views", "head_epochs", "tail_epochs", "intensity")


def chosen_rung(ladder: dict) -> str:
    """The rung the validation criterion picks: highest mean balanced accuracy, then highest worst."""
    return max(ladder, key=lambda label: (ladder[label]["selection_on_validation"]["mean_balanced_accuracy"],
                                          ladder[label]["selection_on_validation"]["worst_balanced_accuracy"]))


def chosen_per_device(ladder: dict) -> dict:
    """``chosen_rung`` among the rungs computed on each device (their numerics differ slightly)."""
    devices = sorted({entry["device"] for entry in ladder.values()})
    return {device: chosen_rung({label: entry for label, entry in ladder.items() if entry["device"] == device})
            for device in devices}


@functools.cache
def predictions(run: Path, tta: bool, cache_dir: str, test: tuple, device: str) -> tuple[np.ndarray, ...]:
    """Probabilities of one model (computed once for all rules): all validation images, 400 of them under
    every shift, and the test images; each with its labels."""
    model = load_model(run).model
    if tta:  # the trunk sees mirrored images too, so its cached activations do not apply
        model, cache_dir = FlipAveraged(model), None
    val = read_split(run / "split.csv")["val"]
    y = np.array([s.label for s in val])
    clean = sigmoid(predict_logits(model, [s.path for s in val], workers=2, device=device)[0])
    chosen = evenly_spaced(len(val), SHIFT_IMAGES)
    shifted = sigmoid(shifted_logits(model, [val[i] for i in chosen], cache_dir=cache_dir, device=device))
    test_p = sigmoid(predict_logits(model, [s.path for s in test], workers=2, device=device)[0])
    return y, clean, y[chosen], shifted, np.array([s.label for s in test]), test_p


def rung(run: Path, rule: str, tta: bool, cache_dir: str, test: tuple, device: str) -> dict:
    y, clean, shift_y, shifted, test_y, test_p = predictions(run, tta, cache_dir, test, device)
    fit_y, fit_p = y, clean
    if rule == "val+shifts":
        fit_y, fit_p = pool_with_shifts(y, clean, shift_y, shifted)
    threshold = choose_threshold(fit_y, fit_p, rule="youden")
    t = binary_metrics(test_y, test_p, threshold)
    settings = json.loads((run / "config.json").read_text())
    return {"run": str(run), "threshold_on": rule, "test_time_augmentation": "mirror" if tta else "none",
            "commit": launch_commit(), "machine": machine(), "device": device, "threshold": threshold,
            "augmentation": settings["augmentation"],
            "settings": {k: settings.get(k) for k in RECORDED_SETTINGS},
            "selection_on_validation": selection_summary(y, clean, shift_y, shifted, threshold),
            "test_reported_after_choice": {k: t[k] for k in ("auc", "accuracy", "sensitivity", "specificity", "f1")}}


def earlier_rungs() -> dict:
    """The ladder in robustness.json, each rung naming the commit it came from."""
    path = RESULTS / "robustness.json"
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    return {label: {"commit": earlier["commit"], "machine": earlier["machine"], "device": "cpu",
                    "test_time_augmentation": "none", **entry}
            for label, entry in earlier["ladder"].items()}


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rungs", nargs="+", help="LABEL=RUN_DIR[:RULE[:tta]]")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda; bf16 either way")
    parser.add_argument("--merge", action="store_true", help="keep the rungs already in robustness.json")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "pneumoscan"))
    args = parser.parse_args()
    test = tuple(scan_kaggle_split(DATA, "test"))
    device = str(pick_device(args.device))
    ladder = earlier_rungs() if args.merge else {}
    for item in args.rungs:
        label, target = item.split("=", 1)
        path, _, options = target.partition(":")
        rule, _, tta = options.partition(":")
        ladder[label] = rung(Path(path), rule or "val", tta == "tta", args.cache_dir, test, device)
        print(label, json.dumps(ladder[label]["selection_on_validation"]),
              json.dumps(ladder[label]["test_reported_after_choice"]))
    write_result("robustness", {
        "criterion": "chosen before any test evaluation: the highest mean balanced accuracy (mean of sensitivity "
                     "and specificity) over clean validation and validation under 14 synthetic acquisition shifts "
                     "(400 images), at the rung's threshold; the test columns are reported after the choice",
        "data": str(DATA.relative_to(DATA.parents[2])), "chosen_by_validation": chosen_per_device(ladder),
        "ladder": ladder})


if __name__ == "__main__":
    main()

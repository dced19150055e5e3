"""Brain MRI, tumour vs no tumour: does the MRI-tuned recipe beat the default, by cross-validation on Training?

    python -m bench.brain_mri_binary_cv [--folds 3]

The tumour vs no tumour run trains ``densenet121-tuned`` (tuned on chest X-rays). Its validation split, 816
slices, has 2 errors, so it cannot tell that recipe from ``densenet121-brain-mri`` (tuned on 4-class brain MRI
validation). Here every Training slice is validated once: Training is cut into ``--folds`` folds by duplicate
group (stratified by the four source classes) and each recipe trains once per fold, with ``bench.brain_mri``'s
budget, validating on the held-out fold at the threshold it chooses there. Testing is never read.

The rule was fixed before any run: ``densenet121-brain-mri`` becomes the tumour vs no tumour recipe when it
classifies more out-of-fold slices right, summed over the folds, than ``densenet121-tuned``; a tie keeps the
default. Out-of-fold AUC and log loss are reported beside it. Writes ``bench/results/brain_mri_binary_cv.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from bench.brain_mri import BINARY, BUDGET, MRI, WORK, settings
from bench.brain_mri_tuned_seeds import RECIPES  # the same two recipes, default and tuned
from bench.common import launch_commit, write_result
from pneumoscan.data.records import Sample, load_samples, task_classes
from pneumoscan.data.split import grouped_folds, write_split
from pneumoscan.evaluate.report import read_predictions
from pneumoscan.run_folder import RunFolder
from pneumoscan.train import train
from pneumoscan.train.setup import grouped_by_duplicates


def cv_folds(samples: list[Sample], strata: list, folds: int, seed: int = 0) -> list[dict[str, list[Sample]]]:
    """``folds`` splits of ``samples``, each fold once as ``val`` and the rest as ``train``: a group (``patient``)
    never on both sides, stratified by ``strata``."""
    return [{"train": [samples[i] for i in train], "val": [samples[i] for i in val]}
            for train, val in grouped_folds(strata, [s.patient for s in samples], folds, seed)]


def fold_splits(folds: int, seed: int = 0) -> list[Path]:
    """Write one split file per fold of Training: binary labels, duplicate groups kept whole, stratified by
    the four source classes (the class folders)."""
    samples = grouped_by_duplicates(load_samples(str(MRI), "Training", task_classes(str(MRI), BINARY, "Training")))
    paths = []
    for k, split in enumerate(cv_folds(samples, [Path(s.path).parent.name for s in samples], folds, seed)):
        path = WORK / "binary_cv" / f"fold{k}_of{folds}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_split(path, split)
        paths.append(path)
    return paths


def out_of_fold(run: Path) -> dict:
    """A finished run's validation (its held-out fold): the decision at its threshold, and its scores."""
    decision = json.loads(RunFolder(run).metrics.read_text())["validation"]["at_threshold"]
    names = tuple(json.loads(RunFolder(run).classes.read_text())["names"])
    _, y, prob = read_predictions(RunFolder(run).predictions("val"), names=names)
    return {"n": decision["n"], "correct": round(decision["accuracy"] * decision["n"]),
            "confusion_matrix": decision["confusion_matrix"], "threshold": decision["threshold"],
            "y": y.tolist(), "prob": prob.tolist()}


def summary(folds: list[dict]) -> dict:
    y = np.concatenate([f["y"] for f in folds])
    prob = np.clip(np.concatenate([f["prob"] for f in folds]), 1e-7, 1 - 1e-7)
    correct, n = sum(f["correct"] for f in folds), sum(f["n"] for f in folds)
    return {"correct": correct, "n": n, "errors": n - correct, "accuracy": correct / n,
            "errors_per_fold": [f["n"] - f["correct"] for f in folds],
            "confusion_matrix": np.sum([f["confusion_matrix"] for f in folds], axis=0).tolist(),
            "thresholds": [f["threshold"] for f in folds],
            "pooled_auc": float(roc_auc_score(y, prob)), "log_loss": float(log_loss(y, prob))}


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    splits = fold_splits(args.folds)
    results, seconds = {recipe: [] for recipe in RECIPES}, {}
    for k, split in enumerate(splits):
        for recipe, name in RECIPES.items():
            out = WORK / "binary_cv" / f"densenet121_binary_{recipe}_fold{k}_of{args.folds}"
            config = replace(settings("densenet121", 0, BINARY, out, BUDGET, recipe=name), split=str(split),
                             test_split="")
            run_started = time.perf_counter()
            if not RunFolder(out).finished():
                train(config, resume=RunFolder(out).config.exists())
            seconds[f"{recipe}_fold{k}"] = round(time.perf_counter() - run_started)
            results[recipe].append(out_of_fold(out))
    totals = {recipe: summary(folds) for recipe, folds in results.items()}
    adopt = totals["tuned"]["correct"] > totals["default"]["correct"]
    write_result("brain_mri_binary_cv", {
        "data": f"shared/data/brain_tumor_mri Training only, {args.folds} folds by duplicate group, stratified by "
                "source class; Testing not read",
        "task": "tumour vs no tumour", "recipes": RECIPES, "budget": BUDGET, "folds": args.folds,
        "rule": "adopt densenet121-brain-mri for tumour vs no tumour when it classifies more out-of-fold slices "
                "right (each fold at the threshold its run chose on that fold); a tie keeps densenet121-tuned",
        "out_of_fold": totals, "adopt_tuned": adopt, "train_seconds": seconds,
        "wall_seconds": round(time.perf_counter() - started, 1),
    })
    print(f"out-of-fold slices right: default {totals['default']['correct']}, tuned {totals['tuned']['correct']} "
          f"of {totals['default']['n']} -> {'adopt' if adopt else 'keep the default'}")


if __name__ == "__main__":
    main()

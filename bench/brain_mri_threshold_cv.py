"""Brain MRI, tumour vs no tumour: fit the threshold on clean validation, or on validation plus its shifts?

    python -m bench.brain_mri_threshold_cv

Two-class runs choose their threshold on validation pooled with acquisition-shifted copies of 400 of its
images (``threshold_on="val+shifts"``), a choice made on chest X-rays, whose test split differs from
validation in acquisition. Here the two fitting sets are compared on Training alone, with the six models of
``bench.brain_mri_binary_cv`` (two recipes x three folds; run that first) and nothing trained: each model's
held-out fold is cut in two halves by duplicate group, the threshold is fitted on one half (its clean
slices, or its clean slices and their shifted copies) and scored on the other half's clean slices, then
the other way round. Every clean validation slice is thus scored once per model by a threshold that did
not see it. Testing is never read.

The rule, fixed before the first run: validation alone (``threshold_on="val"``) becomes the tumour vs no
tumour setting of ``bench.brain_mri`` when it makes fewer held-out errors than ``val+shifts`` over the
six models and an exact McNemar test on the paired decisions gives p < 0.05; otherwise ``val+shifts``
stays. Accuracy on the held-out halves' shifted copies is reported beside it, as what each choice costs
under acquisition shifts. Writes ``bench/results/brain_mri_threshold_cv.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.brain_mri import WORK
from bench.common import launch_commit, write_result
from pneumoscan.data import read_split
from pneumoscan.data.split import grouped_folds
from pneumoscan.evaluate import choose_threshold
from pneumoscan.evaluate.report import read_predictions
from pneumoscan.evaluate.robustness import pool_with_shifts
from pneumoscan.evaluate.stats import mcnemar_test
from pneumoscan.train.setup import run_config

NAMES = ("no tumour", "tumour")
FITTING_SETS = ("val", "val+shifts")


def two_halves(labels: np.ndarray, groups: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two halves, stratified by label, each duplicate group on one side."""
    return grouped_folds(labels, groups, 2, seed)[0]


def threshold_on(fitting_set: str, y, prob, shift_y, shifted, rule: dict) -> float:
    """The threshold ``choose_threshold`` picks on clean rows, or on them pooled with their shifted copies."""
    if fitting_set == "val+shifts":
        y, prob = pool_with_shifts(y, prob, shift_y, shifted)
    return choose_threshold(y, prob, **rule)


def held_out(y, prob, groups, shift_rows, shifted, rule: dict) -> dict:
    """Per fitting set: each clean row's decision by the threshold fitted on the other half, and the held-out
    shifted copies' accuracy. ``shift_rows`` are the clean rows whose shifted copies ``shifted`` holds."""
    halves = two_halves(y, groups)
    called = {name: np.zeros(len(y), dtype=int) for name in FITTING_SETS}
    shifted_right = {name: 0 for name in FITTING_SETS}
    thresholds = {name: [] for name in FITTING_SETS}
    for fit, score in (halves, halves[::-1]):
        fit_shifts, score_shifts = np.isin(shift_rows, fit), np.isin(shift_rows, score)
        for name in FITTING_SETS:
            t = threshold_on(name, y[fit], prob[fit], y[shift_rows[fit_shifts]], shifted[fit_shifts], rule)
            thresholds[name].append(t)
            called[name][score] = prob[score] >= t
            copies = shifted[score_shifts] >= t
            shifted_right[name] += int((copies == y[shift_rows[score_shifts]][:, None]).sum())
    n_shifted = int(shifted.size)
    return {name: {"called": called[name], "errors": int((called[name] != y).sum()), "thresholds": thresholds[name],
                   "shifted_accuracy": shifted_right[name] / n_shifted} for name in FITTING_SETS}


def run_rows(run: Path):
    """(labels, probabilities, duplicate groups, rows with shifted copies, shifted probabilities) of a run's
    validation."""
    group_of = {s.path: s.patient for s in read_split(run / "split.csv")["val"]}
    paths, y, prob = read_predictions(run / "predictions_val.csv", names=NAMES)
    shifted = np.load(run / "predictions_val_shifted.npz")
    row_of = {p: i for i, p in enumerate(paths)}
    shift_rows = np.array([row_of[str(p)] for p in shifted["paths"]])
    return y, prob, [group_of[p] for p in paths], shift_rows, shifted["shifted"]


def main() -> None:
    launch_commit()
    started = time.perf_counter()
    runs = sorted((WORK / "binary_cv").glob("densenet121_binary_*_fold*"))
    if not runs:
        raise SystemExit("no cross-validation runs: run python -m bench.brain_mri_binary_cv first")
    per_run, y_all, called_all = {}, [], {name: [] for name in FITTING_SETS}
    for run in runs:
        config = run_config(run)
        y, prob, groups, shift_rows, shifted = run_rows(run)
        result = held_out(y, prob, groups, shift_rows, shifted, dict(rule=config.threshold_rule,
                                                                      target_sensitivity=config.target_sensitivity))
        per_run[run.name] = {name: {k: v for k, v in r.items() if k != "called"} | {"n": len(y)}
                             for name, r in result.items()}
        y_all.append(y)
        for name in FITTING_SETS:
            called_all[name].append(result[name]["called"])
    y_all = np.concatenate(y_all)
    called_all = {name: np.concatenate(c) for name, c in called_all.items()}
    errors = {name: int((c != y_all).sum()) for name, c in called_all.items()}
    test = mcnemar_test(y_all, called_all["val"], called_all["val+shifts"])
    adopt = errors["val"] < errors["val+shifts"] and test["p_value"] < 0.05
    write_result("brain_mri_threshold_cv", {
        "data": "the held-out folds of bench.brain_mri_binary_cv (Training only), each cut in two halves by "
                "duplicate group; Testing not read",
        "rule": "threshold_on=val for tumour vs no tumour when it makes fewer held-out errors over all models "
                "and an exact McNemar test gives p < 0.05; otherwise val+shifts stays",
        "slices_scored": int(len(y_all)), "held_out_errors": errors, "mcnemar": test,
        "false_positives": {name: int(((c == 1) & (y_all == 0)).sum()) for name, c in called_all.items()},
        "false_negatives": {name: int(((c == 0) & (y_all == 1)).sum()) for name, c in called_all.items()},
        "shifted_accuracy_mean": {name: float(np.mean([r[name]["shifted_accuracy"] for r in per_run.values()]))
                                  for name in FITTING_SETS},
        "runs": per_run, "adopt_val": adopt, "wall_seconds": round(time.perf_counter() - started, 1),
    })
    print(f"held-out errors: val {errors['val']}, val+shifts {errors['val+shifts']} of {len(y_all)} "
          f"(McNemar p {test['p_value']:.3g}) -> {'threshold_on=val' if adopt else 'keep val+shifts'}")


if __name__ == "__main__":
    main()

"""Ensembles of trained runs, chosen on validation only: does averaging models close the test gap?

    python -m bench.ensemble LABEL=RUN_DIR ... [--name ensemble]

Reads the predictions each run saved (``predictions_val.csv``, ``predictions_val_shifted.npz``,
``predictions_test.csv``; the runs must share one validation split) and scores every single run and
every combination of two or more by their mean probability. Each candidate gets its threshold from
the default rule (Youden on validation pooled with its 14 shifted copies), then the validation-only
criterion of ``bench/robustness.py`` (mean balanced accuracy over clean and shifted validation,
ties broken by the worst condition) picks one candidate. Test metrics are reported for all of them,
after the choice. Writes ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from bench.common import launch_commit, write_result
from pneumoscan.evaluate import binary_metrics, choose_threshold  # noqa: E402
from pneumoscan.evaluate.metrics import bootstrap_ci  # noqa: E402
from pneumoscan.evaluate.report import read_predictions  # noqa: E402
from pneumoscan.evaluate.robustness import pool_with_shifts, selection_summary  # noqa: E402

TEST_KEYS = ("auc", "accuracy", "sensitivity", "specificity", "f1")


def saved_predictions(run: Path) -> dict:
    """Validation, shifted validation and test predictions of one run, keyed for alignment."""
    val_paths, val_y, val_p = read_predictions(run / "predictions_val.csv")
    test_paths, test_y, test_p = read_predictions(run / "predictions_test.csv")
    shifted = np.load(run / "predictions_val_shifted.npz")
    return {"val_paths": val_paths, "val_y": val_y, "val_p": val_p, "shift_paths": list(shifted["paths"]),
            "shift_y": shifted["labels"], "shift_p": shifted["shifted"], "test_paths": test_paths,
            "test_y": test_y, "test_p": test_p}


def check_aligned(runs: dict[str, dict]) -> None:
    first = next(iter(runs.values()))
    for label, r in runs.items():
        for key in ("val_paths", "shift_paths", "test_paths"):
            if r[key] != first[key]:
                raise SystemExit(f"{label}: its {key.split('_')[0]} images differ from the first run's; "
                                 "ensembles need runs on one split")


def candidate(members: tuple[str, ...], runs: dict[str, dict]) -> dict:
    """Mean probability of ``members``; threshold and criterion on validation; test after."""
    mean = {key: np.mean([runs[m][key] for m in members], axis=0) for key in ("val_p", "shift_p", "test_p")}
    first = runs[members[0]]
    fit_y, fit_p = pool_with_shifts(first["val_y"], mean["val_p"], first["shift_y"], mean["shift_p"])
    threshold = choose_threshold(fit_y, fit_p, rule="youden")
    test = binary_metrics(first["test_y"], mean["test_p"], threshold)
    test_half = binary_metrics(first["test_y"], mean["test_p"], 0.5)
    ci = bootstrap_ci(first["test_y"], mean["test_p"], threshold, n_boot=1000, seed=0)
    return {"members": list(members), "threshold": threshold,
            "selection_on_validation": selection_summary(first["val_y"], mean["val_p"], first["shift_y"],
                                                         mean["shift_p"], threshold),
            "test_reported_after_choice": {k: test[k] for k in TEST_KEYS},
            "test_ci95": {k: ci[k] for k in TEST_KEYS if k in ci},
            "test_at_0.5": {k: test_half[k] for k in TEST_KEYS}}


def everyone(candidates: dict[str, dict], runs: dict) -> dict:
    """The combination of every run, the one choice made before any validation score was seen."""
    full = candidates["+".join(runs)]
    return {"members": full["members"], "threshold": full["threshold"], "test": full["test_reported_after_choice"]}


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("--name", default="ensemble")
    args = parser.parse_args()
    run_dirs = dict(item.split("=", 1) for item in args.runs)
    runs = {label: saved_predictions(Path(path)) for label, path in run_dirs.items()}
    check_aligned(runs)
    candidates = {"+".join(members): candidate(members, runs)
                  for size in range(1, len(runs) + 1) for members in itertools.combinations(runs, size)}
    chosen = max(candidates, key=lambda k: (candidates[k]["selection_on_validation"]["mean_balanced_accuracy"],
                                             candidates[k]["selection_on_validation"]["worst_balanced_accuracy"]))
    for label, c in candidates.items():
        s, t = c["selection_on_validation"], c["test_reported_after_choice"]
        print(f"{'*' if label == chosen else ' '} {label:40s} thr {c['threshold']:.3f}  val mean/worst balanced "
              f"{s['mean_balanced_accuracy']:.4f}/{s['worst_balanced_accuracy']:.4f}  test AUC {t['auc']:.4f} "
              f"acc {t['accuracy']:.4f} sens {t['sensitivity']:.4f} spec {t['specificity']:.4f}")
    write_result(args.name, {
        "criterion": "chosen on validation only: the highest mean balanced accuracy over clean validation and its "
                     "14 synthetic acquisition shifts (ties: the highest worst balanced accuracy), each candidate at "
                     "its own Youden threshold on validation pooled with the shifts; test columns reported after",
        "runs": run_dirs,
        "combination": "mean of the members' probabilities", "chosen": chosen,
        "test": candidates[chosen]["test_reported_after_choice"], "threshold": candidates[chosen]["threshold"],
        "all_members": everyone(candidates, runs), "candidates": candidates})


if __name__ == "__main__":
    main()

"""How firmly validation fixes a run's threshold: the bootstrap interval of the threshold over validation
patients, and what the test metrics would be anywhere in that interval.

Reads finished run folders (their split, validation and shifted-validation predictions, and test
predictions); trains nothing. The test metrics across the interval are descriptive: they say how much
of a single run's test accuracy is the luck of the validation draw. Nothing is chosen from them.

    python -m bench.threshold_stability RUN [RUN ...] --name threshold_stability_densenet121_tuned
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common import launch_commit, write_result
from pneumoscan.data import read_split  # noqa: E402
from pneumoscan.evaluate import binary_metrics, choose_threshold, threshold_interval  # noqa: E402
from pneumoscan.evaluate.report import read_predictions  # noqa: E402
from pneumoscan.evaluate.robustness import pool_groups_with_shifts, pool_with_shifts  # noqa: E402
from pneumoscan.train import TrainConfig  # noqa: E402
from pneumoscan.train.setup import run_config  # noqa: E402

N_BOOT = 1000


def fitting_set(run: Path, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels, probabilities and patients of what the run's threshold was fitted on."""
    patient_of = {s.path: s.patient for s in read_split(run / "split.csv")["val"]}
    paths, y, prob = read_predictions(run / "predictions_val.csv")
    patients = [patient_of[p] for p in paths]
    if config.threshold_on == "val+shifts":
        shifted = np.load(run / "predictions_val_shifted.npz")
        y, prob = pool_with_shifts(y, prob, shifted["labels"], shifted["shifted"])
        patients = pool_groups_with_shifts(patients, [patient_of[str(p)] for p in shifted["paths"]],
                                           shifted["shifted"].shape[1])
    return y, prob, patients


def stability(run: Path) -> dict:
    config = run_config(run)
    rule = dict(rule=config.threshold_rule, target_sensitivity=config.target_sensitivity)
    y, prob, patients = fitting_set(run, config)
    threshold = choose_threshold(y, prob, **rule)
    low, high = threshold_interval(y, prob, patients, n_boot=N_BOOT, seed=config.seed, **rule)
    _, test_y, test_prob = read_predictions(run / "predictions_test.csv")
    grid = np.linspace(low, high, 41)
    accuracy = [binary_metrics(test_y, test_prob, t)["accuracy"] for t in grid]

    def at(t):
        m = binary_metrics(test_y, test_prob, t)
        return {k: m[k] for k in ("accuracy", "sensitivity", "specificity")}

    return {"run": str(run), "seed": config.seed, "threshold": threshold, "threshold_ci95": [low, high],
            "validation_patients": len(set(patients)), "fitted_rows": len(y),
            "test_at_threshold": at(threshold), "test_at_ci_low": at(low), "test_at_ci_high": at(high),
            "test_accuracy_range_over_ci": [min(accuracy), max(accuracy)]}


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--name", default="threshold_stability")
    args = parser.parse_args()
    runs = [stability(run) for run in args.runs]
    for r in runs:
        (low, high), (worst, best) = r["threshold_ci95"], r["test_accuracy_range_over_ci"]
        print(f"{r['run']}: threshold {r['threshold']:.3f}, 95% interval {low:.3f} to {high:.3f}; test accuracy "
              f"{r['test_at_threshold']['accuracy']:.4f} at it, {worst:.4f} to {best:.4f} over the interval")
    write_result(args.name, {
        "protocol": f"threshold interval: percentile bootstrap over validation patients ({N_BOOT} draws), each "
                    "patient with all its images and their shifted copies; test metrics across it are descriptive, "
                    "nothing is chosen from them",
        "runs": runs})


if __name__ == "__main__":
    main()

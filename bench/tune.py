"""Tuning benchmark: a DenseNet121 Optuna study on the CPU, then the best settings trained and tested once.

    python -m bench.tune [--trials 30] [--minutes 60]

Trials use a short budget (12 head + 3 tail epochs, pruned by the median rule); the best settings
are then retrained with the default budget (30 + 10 epochs, early stopping), a choice made before
the study, and evaluated once on the test split. Writes ``bench/results/tune.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from bench.common import DATA, DATA_NAME, ROOT, WEIGHTS, launch_commit, write_result
from pneumoscan.settings import load_settings  # noqa: E402
from pneumoscan.studies.tune import TuneConfig, tune  # noqa: E402
from pneumoscan.train import TrainConfig, train  # noqa: E402


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--work", default=str(ROOT / "bench" / "work"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    work = Path(args.work)
    cache = work / "cache" / "densenet121"
    config = TuneConfig(data=str(DATA), out=str(work / "tune"), model="densenet121",
                        weights=str(WEIGHTS["densenet121"]),
                        trials=args.trials, timeout_minutes=args.minutes, head_epochs=12, tail_epochs=3,
                        cache_dir=str(cache))
    summary = tune(config)

    best = load_settings(TrainConfig, file=summary["best_config"],
                         overrides={"out": str(work / "tune_best"), "head": {"epochs": 30}, "tail": {"epochs": 10},
                                    "test_split": "test", "shift_report": True, "cache_dir": str(cache)})
    shutil.rmtree(best.out, ignore_errors=True)
    started = time.perf_counter()
    run = train(best)
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]["at_threshold"]
    write_result("tune", {
        **{k: summary[k] for k in ("n_trials", "n_complete", "n_pruned", "wall_seconds", "cache_setup_seconds",
                                   "trials_per_hour", "best_params", "best_trial")},
        "objective": config.objective, "val_auc": summary["val_auc"],
        "retrain": {"budget": "head 30 + tail 10 epochs with early stopping (trials: 12 + 3)",
                    "seconds": round(time.perf_counter() - started, 1), "threshold": metrics["threshold"],
                    "threshold_on": metrics["threshold_on"],
                    "validation_auc": metrics["validation"]["at_threshold"]["auc"]},
        "test": {k: test[k] for k in ("auc", "accuracy", "sensitivity", "specificity", "f1")} | {"ci95": test["ci95"]},
        "test_at_0.5": {k: metrics["test"]["at_0.5"][k] for k in ("auc", "accuracy", "sensitivity", "specificity")},
        "data": DATA_NAME, "storage": summary["storage"],
    })


if __name__ == "__main__":
    main()

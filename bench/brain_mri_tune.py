"""Brain MRI, 4 classes: an Optuna study of DenseNet121 on validation, then its best settings trained
with ``bench.brain_mri``'s budget and screened once on the official Testing split.

    python -m bench.brain_mri_tune [--trials 30] [--minutes 20]

The study starts from ``bench.brain_mri``'s settings (the same duplicate-grouped split of Training, the
``densenet121-tuned`` recipe) and searches ``pneumoscan.tune``'s space on the many-class objective
(validation accuracy pooled over the slices and their acquisition-shifted copies), with the published
augmentation as its only level (one trunk cache to fill; ``--levels`` adds others) and short trials (12
head + 3 tail epochs, median pruning). Its best settings are then trained with the benchmark's budget
and compared with the default run of the same seed on validation; Testing is screened once, at the end.
Writes ``bench/results/brain_mri_tune.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import replace

from bench.brain_mri import BUDGET, WORK, run_folder, settings
from bench.common import launch_commit, write_result
from pneumoscan.run_folder import RunFolder
from pneumoscan.settings import load_settings, to_dict
from pneumoscan.train import TrainConfig, train
from pneumoscan.tune import TuneConfig, tune


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--levels", nargs="+", default=["recipe"], choices=["recipe", "acquisition"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    study = WORK / "tune"
    default_run = run_folder("densenet121", "4class", 0, BUDGET)
    if not RunFolder(default_run).finished():
        parser.error(f"{default_run} is not a finished run: train it first with python -m bench.brain_mri")
    base = settings("densenet121", 0, "", study / "base", BUDGET)
    study.mkdir(parents=True, exist_ok=True)
    (study / "base_config.json").write_text(json.dumps(to_dict(replace(base, test_split="")), indent=2) + "\n")
    config = TuneConfig(data=base.data, out=str(study), model="densenet121", weights=base.weights,
                        trials=args.trials, timeout_minutes=args.minutes, head_epochs=12, tail_epochs=3,
                        augmentation_levels=tuple(args.levels), base_config=str(study / "base_config.json"),
                        cache_dir=base.cache_dir)
    summary = tune(config)

    best = load_settings(TrainConfig, file=summary["best_config"],
                         overrides={"out": str(WORK / "densenet121_4class_seed0_tuned"), "test_split": "Testing",
                                    "head_epochs": BUDGET["head_epochs"], "tail_epochs": BUDGET["tail_epochs"]})
    shutil.rmtree(best.out, ignore_errors=True)
    run_started = time.perf_counter()
    run = train(best)
    tuned, default = (json.loads(RunFolder(r).metrics.read_text()) for r in (run, default_run))
    write_result("brain_mri_tune", {
        "data": "shared/data/brain_tumor_mri: validation carved out of Training by duplicate group (seed 0)",
        **{k: summary[k] for k in ("n_trials", "n_complete", "n_pruned", "objective", "best_value", "best_trial",
                                   "best_params", "wall_seconds", "cache_setup_seconds", "trials_per_hour")},
        "levels": args.levels,
        "retrain": {"budget": BUDGET, "seconds": round(time.perf_counter() - run_started, 1),
                    "validation": tuned["validation"]["at_argmax"], "test": tuned["test"]["at_argmax"]},
        "default_run": {"run": str(default_run.name), "validation": default["validation"]["at_argmax"],
                        "test": default["test"]["at_argmax"]},
        "total_seconds": round(time.perf_counter() - started, 1),
    })
    print(f"tuned: validation accuracy {tuned['validation']['at_argmax']['accuracy']:.4f} (default "
          f"{default['validation']['at_argmax']['accuracy']:.4f}); test accuracy "
          f"{tuned['test']['at_argmax']['accuracy']:.4f} (default {default['test']['at_argmax']['accuracy']:.4f})")


if __name__ == "__main__":
    main()

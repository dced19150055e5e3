"""Brain MRI, 4 classes: do the settings tuned on seed 0's validation beat the default on other seeds'?

    python -m bench.brain_mri_tuned_seeds [--seeds 1 2]

``bench.brain_mri_tune`` chose DenseNet121 settings on the validation slices of seed 0 and its best run
beat the default of the same seed by 3 of 816 validation slices: one seed, and the seed it was tuned on.
Here both recipes are trained again, with ``bench.brain_mri``'s budget, on the splits of other seeds (each
seed carves its own validation out of Training by duplicate group), Testing unread. The decision is taken
on validation alone, by a rule fixed before any run: the tuned settings replace the default for this task
when they classify more validation slices correctly in all, over seed 0 (``brain_mri_tune.json``) and
these seeds. Only then is Testing screened, once per run, to describe what the decision does. Writes
``bench/results/brain_mri_tuned_seeds.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from bench.brain_mri import BUDGET, MRI, run_folder, settings
from bench.common import RESULTS, launch_commit, write_result
from pneumoscan.data.records import load_samples
from pneumoscan.evaluate import evaluate_screened
from pneumoscan.run_folder import RunFolder
from pneumoscan.screen import load
from pneumoscan.train import TrainConfig, train
from pneumoscan.train.setup import run_config

# the default before this comparison, and brain_mri_tune.json's best trial on top of it
RECIPES = {"default": "densenet121-tuned", "tuned": "densenet121-brain-mri"}
SEED0_RUNS = {"default": "default_run", "tuned": "retrain"}  # where brain_mri_tune.json keeps each one's seed 0


def recipe_config(recipe: str, seed: int) -> TrainConfig:
    """``bench.brain_mri``'s 4-class settings of ``seed`` on the ``default`` or the ``tuned`` recipe, without the
    test split."""
    out = run_folder("densenet121", "4class", seed, BUDGET)
    out = out.with_name(f"{out.name}_{recipe}_validation_only")
    return replace(settings("densenet121", seed, "", out, BUDGET, recipe=RECIPES[recipe]), test_split="")


def validation_of(run: Path) -> dict:
    """A finished run's validation metrics at its arg-max decision."""
    return json.loads(RunFolder(run).metrics.read_text())["validation"]["at_argmax"]


def correct(metrics: dict) -> int:
    return round(metrics["accuracy"] * metrics["n"])


def screen_testing(run: Path) -> dict:
    """Testing screened once by the run's model, as ``pneumoscan evaluate`` would."""
    screener = load(run, precision=run_config(run).precision)
    samples = load_samples(str(MRI), "Testing")  # one class per folder, sorted by name, as the run trained
    result = evaluate_screened(screener, samples, out_dir=run / "eval-Testing", name="Testing")
    return {**result["at_argmax"], "screening": result["screening"]}


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    tune = json.loads((RESULTS / "brain_mri_tune.json").read_text())
    runs, seconds = {}, {}
    for seed in args.seeds:
        for recipe in RECIPES:
            config = recipe_config(recipe, seed)
            run_started = time.perf_counter()
            if not RunFolder(config.out).finished():
                train(config, resume=RunFolder(config.out).config.exists())
            runs[(recipe, seed)], seconds[(recipe, seed)] = Path(config.out), round(time.perf_counter() - run_started)
    validation = {recipe: {0: tune[SEED0_RUNS[recipe]]["validation"]} for recipe in RECIPES}
    for (recipe, seed), run in runs.items():
        validation[recipe][seed] = validation_of(run)
    totals = {recipe: sum(correct(m) for m in validation[recipe].values()) for recipe in RECIPES}
    adopt = totals["tuned"] > totals["default"]
    # the decision is fixed above; Testing is read only from here on
    testing = {f"{recipe}_seed{seed}": screen_testing(run) for (recipe, seed), run in runs.items()}
    write_result("brain_mri_tuned_seeds", {
        "data": "shared/data/brain_tumor_mri: each seed's validation carved out of Training by duplicate group",
        "rule": "adopt the tuned settings when they classify more validation slices correctly over all seeds",
        "tuned_params": tune["best_params"], "budget": BUDGET,
        "validation": {recipe: {f"seed{s}": {k: m[k] for k in ("accuracy", "macro_f1", "n")} for s, m in by.items()}
                       for recipe, by in validation.items()},
        "validation_correct": totals, "adopt_tuned": adopt,
        "seed0_source": "brain_mri_tune.json (default_run and retrain)",
        "test": {name: {k: m[k] for k in ("accuracy", "macro_f1", "balanced_accuracy", "macro_auc", "n",
                                          "ci95", "screening")} for name, m in testing.items()},
        "train_seconds": {f"{recipe}_seed{seed}": s for (recipe, seed), s in seconds.items()},
        "wall_seconds": round(time.perf_counter() - started, 1),
    })
    print(f"validation slices right: default {totals['default']}, tuned {totals['tuned']} -> "
          f"{'adopt' if adopt else 'keep the default'}")


if __name__ == "__main__":
    main()

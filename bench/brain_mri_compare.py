"""Brain MRI, 4 classes: DenseNet121, ResNet50 and the baseline CNN side by side.

    python -m bench.brain_mri_compare [--seeds 3] [--models densenet121 resnet50 baseline_cnn] [--recorded-only]

Each model is trained as ``bench.brain_mri`` trains it (its default recipe, the same budget, validation
carved out of Training by duplicate group, the same split for every model of a seed) and screened once on
the official Testing split; the runs are the same folders as ``bench.brain_mri``'s, so either benchmark
reuses the other's. Seed ``i`` of one model is paired with seed ``i`` of another (McNemar, paired bootstrap
of the accuracy and macro-F1 differences). A finished run keeps a record in
``bench/results/brain_mri_compare_runs/`` and is not trained again, so the comparison can be spread over
sessions; what disturbed a run's training time is noted by hand in ``TIMING_NOTES.txt`` there.
``--recorded-only`` trains nothing: each model keeps its recorded seeds up to its first missing one. Writes
``bench/results/brain_mri_comparison.json`` and ``brain_mri_comparison.md``.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial

from bench.brain_mri import BUDGET, MRI, run_folder, settings
from bench.common import RESULTS, launch_commit, write_result
from bench.compare import ALL_MODELS, provenance, timing_note
from bench.records import RunRecords
from pneumoscan.compare import run_one, side_by_side
from pneumoscan.compare_report import comparison_markdown
from pneumoscan.train import TrainConfig

RECORDS = RESULTS / "brain_mri_compare_runs"


def seed_config(model: str, seed: int) -> TrainConfig:
    """The settings of ``model``'s run of ``seed`` (the same as ``bench.brain_mri``'s, so either reuses the other's)."""
    return settings(model, seed, "", run_folder(model, "4class", seed, BUDGET), BUDGET)


def recorded_seeds(records: RunRecords, model: str, seeds: int) -> list[dict]:
    """``model``'s records of seeds 0, 1, ... up to its first missing one (so seed i still pairs with seed i)."""
    runs = []
    for seed in range(seeds):
        record = records.recorded(f"{model}_seed{seed}", seed_config(model, seed))
        if record is None:
            break
        runs.append(record)
    return runs


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS)
    parser.add_argument("--recorded-only", action="store_true", help="compare the recorded runs, train none")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    records = RunRecords(RECORDS, provenance())
    if args.recorded_only:
        runs = {model: recorded_seeds(records, model, args.seeds) for model in args.models}
        runs = {model: found for model, found in runs.items() if found}
    else:
        runs = {model: [] for model in args.models}
        for seed in range(args.seeds):  # seed by seed, so an interrupted comparison has every model's seed 0
            for model in args.models:
                config = seed_config(model, seed)
                runs[model].append(records(f"{model}_seed{seed}", config, partial(run_one, config)))
    seeds_per_model = {model: len(found) for model, found in runs.items()}
    result = {"protocol": {"models": list(runs), "seeds": max(seeds_per_model.values()),
                           "seeds_per_model": seeds_per_model, "budget": BUDGET,
                           "data": f"shared/data/{MRI.name}: validation carved out of Training by duplicate group, "
                                   "the official Testing split screened once",
                           "recipes": "each model's default: densenet121-tuned for DenseNet121, published for the "
                                      "others",
                           "note": "ResNet50: ImageNet weights through layer3 only (partial file); layer4 and the "
                                   "head trained from scratch"},
              **side_by_side(runs)}
    notes = timing_note(RECORDS)
    write_result("brain_mri_comparison", {**result, "timing_note": notes})
    (RESULTS / "brain_mri_comparison.md").write_text(
        comparison_markdown(result, title="Brain MRI, 4 classes: model comparison")
        + "\n## What the training times came from\n\n" + notes + "\n")


if __name__ == "__main__":
    main()

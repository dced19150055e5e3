"""Brain MRI: DenseNet121, ResNet50 and the baseline CNN side by side, on 4 classes or tumour vs no tumour.

    python -m bench.brain_mri_compare [--task 4class|binary] [--seeds 3] [--models densenet121 resnet50 baseline_cnn]
                                      [--recorded-only]

Each model is trained as ``bench.brain_mri`` trains it (its default recipe, the same budget, validation
carved out of Training by duplicate group, the same split for every model of a seed) and screened once on
the official Testing split; the runs are the same folders as ``bench.brain_mri``'s, so either benchmark
reuses the other's. Seed ``i`` of one model is paired with seed ``i`` of another (McNemar, paired bootstrap
of the accuracy and macro-F1 differences). A finished run keeps a record in
``bench/results/brain_mri_compare_runs/`` and is not trained again, so the comparison can be spread over
sessions; what disturbed a run's training time is noted by hand in ``TIMING_NOTES.txt`` there.
``--recorded-only`` trains nothing: each model keeps its recorded seeds up to its first missing one. Writes
``bench/results/brain_mri_comparison.json`` and ``brain_mri_comparison.md`` (``brain_mri_comparison_binary.*``
for ``--task binary``, whose runs are ``bench.brain_mri``'s tumour vs no tumour runs).
"""

from __future__ import annotations

import argparse
import logging
from functools import partial

from bench.brain_mri import BINARY, BUDGET, MRI, run_folder, settings
from bench.common import RESULTS, launch_commit, write_result
from bench.compare import ALL_MODELS, provenance, timing_note
from bench.records import RunRecords
from pneumoscan.studies.compare import run_one, side_by_side
from pneumoscan.studies.compare_report import comparison_markdown
from pneumoscan.train import TrainConfig

RECORDS = RESULTS / "brain_mri_compare_runs"
TASKS = {"4class": ("", "4 classes"), "binary": (BINARY, "tumour vs no tumour")}  # task: (class mapping, title)


def seed_config(model: str, seed: int, task: str = "4class") -> TrainConfig:
    """The settings of ``model``'s run of ``seed`` (the same as ``bench.brain_mri``'s, so either reuses the other's)."""
    return settings(model, seed, TASKS[task][0], run_folder(model, task, seed, BUDGET), BUDGET)


def task_suffix(task: str) -> str:
    """What names a task's records and results: nothing for 4 classes (the first task), ``_<task>`` else."""
    return "" if task == "4class" else f"_{task}"


def record_name(model: str, seed: int, task: str) -> str:
    """The record of one run: ``<model>_seed<N>`` for 4 classes, ``<model>_<task>_seed<N>`` else."""
    return f"{model}{task_suffix(task)}_seed{seed}"


def recorded_seeds(records: RunRecords, model: str, seeds: int, task: str = "4class") -> list[dict]:
    """``model``'s records of seeds 0, 1, ... up to its first missing one (so seed i still pairs with seed i)."""
    runs = []
    for seed in range(seeds):
        record = records.recorded(record_name(model, seed, task), seed_config(model, seed, task))
        if record is None:
            break
        runs.append(record)
    return runs


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="4class", choices=list(TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS)
    parser.add_argument("--recorded-only", action="store_true", help="compare the recorded runs, train none")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    records = RunRecords(RECORDS, provenance())
    if args.recorded_only:
        runs = {model: recorded_seeds(records, model, args.seeds, args.task) for model in args.models}
        runs = {model: found for model, found in runs.items() if found}
    else:
        runs = {model: [] for model in args.models}
        for seed in range(args.seeds):  # seed by seed, so an interrupted comparison has every model's seed 0
            for model in args.models:
                config = seed_config(model, seed, args.task)
                runs[model].append(records(record_name(model, seed, args.task), config, partial(run_one, config)))
    seeds_per_model = {model: len(found) for model, found in runs.items()}
    result = {"protocol": {"task": TASKS[args.task][1], "models": list(runs), "seeds": max(seeds_per_model.values()),
                           "seeds_per_model": seeds_per_model, "budget": BUDGET,
                           "data": f"shared/data/{MRI.name}: validation carved out of Training by duplicate group, "
                                   "the official Testing split screened once",
                           "recipes": "each model's default: densenet121-brain-mri for DenseNet121, published for "
                                      "the others",
                           "note": "ResNet50: ImageNet weights through layer3 only (partial file); layer4 and the "
                                   "head trained from scratch"},
              **side_by_side(runs)}
    notes = timing_note(RECORDS)
    name = "brain_mri_comparison" + task_suffix(args.task)
    write_result(name, {**result, "timing_note": notes})
    (RESULTS / f"{name}.md").write_text(
        comparison_markdown(result, title=f"Brain MRI, {TASKS[args.task][1]}: model comparison")
        + "\n## What the training times came from\n\n" + notes + "\n")


if __name__ == "__main__":
    main()

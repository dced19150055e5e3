"""Comparison benchmark: DenseNet121, ResNet50 and the baseline CNN, 3 seeds each, plus the pretraining ablation.

    python -m bench.compare [--seeds 3] [--models resnet50] [--precision fp32]

Writes ``bench/results/compare.json`` and ``comparison.md``, both with the hand-kept
``compare_runs/TIMING_NOTES.txt`` (what disturbed each training time, on which machine), and
``comparison_roc.png`` (every model's seed-0 ROC on the test split). Each
finished run leaves a small record (settings, test metrics and predictions, commit and machine) in
``bench/results/compare_runs/``; runs with a record are not retrained, so the comparison (hours on a
2-core CPU) can be spread over several sessions, and the ablation runs can come from a GPU machine.
``--models`` (a subset) only adds records: all seeds of one model while its activation cache exists,
for instance, and ``--ablation`` adds the ablation's records too; the result files are written by a run
over all three models.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from functools import partial
from pathlib import Path

from bench.common import DATA, DATA_NAME, RESULTS, ROOT, WEIGHTS, launch_commit, machine, write_result
from bench.records import RunRecords
from pneumoscan.studies.compare import (
    CompareConfig,
    ablation_runs,
    comparison_runs,
    run_one,
    train_ablation_run,
    write_comparison,
)

ALL_MODELS = CompareConfig.models


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", default=str(ROOT / "bench" / "work"))
    parser.add_argument("--ablation", action=argparse.BooleanOptionalAction,
                        help="the pretraining ablation's two records (default: only with all three models)")
    parser.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS,
                        help="a subset only adds run records; compare.json needs all three")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="",
                        help="override every run's precision: fp32 keeps runs made on a CPU with native bf16 in "
                             "the precision of the records made without it (default: the run config's, bf16 "
                             "where native)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    work = Path(args.work)
    out = work / "compare"
    complete = set(args.models) == set(ALL_MODELS)
    config = CompareConfig(data=str(DATA), out=str(out), models=tuple(args.models), seeds=args.seeds,
                           ablation=complete if args.ablation is None else args.ablation,
                           weights=tuple(f"{m}={p}" for m, p in WEIGHTS.items()),
                           cache_dir=str(work / "cache" / "{model}"), precision=args.precision)
    records = RunRecords(RESULTS / "compare_runs", provenance())
    result = recorded_comparison(config, records)
    if not complete:
        logging.info("records of %s kept in %s; the result files need all of %s", ", ".join(args.models),
                     records.folder, ", ".join(ALL_MODELS))
        return
    notes = timing_note(RESULTS / "compare_runs")
    shutil.copyfile(out / "roc_all.png", RESULTS / "comparison_roc.png")
    (RESULTS / "comparison.md").write_text((out / "comparison.md").read_text() +
                                           "\n![ROC of every model, seed 0](comparison_roc.png)\n" +
                                           "\n## What the training times came from\n\n" + notes + "\n")
    write_result("compare", {**result, "data": DATA_NAME,
                             "note": "ResNet50: ImageNet weights through layer3 only (partial file); layer4 and the "
                                     "head trained from scratch",
                             "timing_note": notes, "train_seconds_not_comparable": records.not_comparable()})


def recorded_comparison(config: CompareConfig, records: RunRecords) -> dict:
    """``pneumoscan compare`` with every run passing through the records: a recorded run is not trained again."""
    started = time.perf_counter()
    runs = {model: [] for model in config.models}
    for model, name, settings in comparison_runs(config):
        runs[model].append(records(name, settings, partial(run_one, settings)))
    ablation = ({init: records(name, settings, partial(train_ablation_run, settings))
                 for init, name, settings in ablation_runs(config)} if config.ablation else None)
    return write_comparison(config, runs, ablation, started)


def provenance() -> str:
    m = machine()
    bf16 = "AMX" if m["amx"] else "AVX512-bf16" if m["avx512_bf16"] else "no native bf16"
    return f"commit {launch_commit()}; {m['cpu']} ({bf16}), {m['cores']} cores, torch {m['torch']}" + \
        (f", GPU {m['gpu_name']}" if m["gpu"] else ", no GPU")


def timing_note(records: Path) -> str:
    """What disturbed the wall times (CPU sharing, pauses, machines), logged by hand beside the run records."""
    notes = records / "TIMING_NOTES.txt"
    return notes.read_text().strip() if notes.exists() else "CPU not shared during the run"


if __name__ == "__main__":
    main()

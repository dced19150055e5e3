"""Brain-tumour MRI, the second task: DenseNet121 on 4 classes and on tumour vs no tumour.

    python -m bench.brain_mri [--model densenet121] [--seed 0] [--tail-epochs 15]

On ``shared/data/brain_tumor_mri``: validation carved out of Training by duplicate group (exact and
near duplicates stay on one side), the official Testing split screened once at the end, with its own
input check (modality "brain MRI"; chest X-rays from the Kermany training split given as images to
refuse), which also screens the Kermany test X-rays and ``bench.qc``'s held-out non-images. Test
metrics are reported on the official split and on the test images without a duplicate in Training.
The tumour vs no tumour run uses the same split and activation cache. Writes
``bench/results/brain_mri_<model>.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import numpy as np

from bench.common import DATA, ROOT, SHARED, WEIGHTS, launch_commit, write_result
from bench.qc import held_out_not_xray, summarize
from pneumoscan.data.duplicates import duplicates_of
from pneumoscan.data.records import scan_kaggle_split
from pneumoscan.data.split import evenly_spaced, read_split
from pneumoscan.evaluate.metrics import binary_metrics
from pneumoscan.evaluate.multiclass import multiclass_metrics
from pneumoscan.inference.screen import load
from pneumoscan.input_checks.checks import InputCheckSettings
from pneumoscan.run_folder import RunFolder
from pneumoscan.settings import load_settings
from pneumoscan.train import TrainConfig, train
from pneumoscan.train.recipes import recipe_settings

MRI = SHARED / "data" / "brain_tumor_mri"
WORK = ROOT / "bench" / "work" / "brain_mri"
BINARY = "notumor=no tumour,glioma=tumour,meningioma=tumour,pituitary=tumour"
# chosen for a 30-minute budget on 2 cores: two cached augmented views (not four), 15 head epochs (not 30),
# resampled copies for the shift score from 200 training images; 15 tail epochs, since with 6 the validation
# accuracy was still rising at the last epoch (docs/experiments.md, "Brain MRI: the tail stage's length")
BUDGET = {"train_views": 2, "head": {"epochs": 15}, "tail": {"epochs": 15}, "patience": 4, "workers": 2}


def refuse_list(count: int = 600) -> Path:
    """A CSV of Kermany training chest X-rays: images the MRI model must refuse."""
    chest = scan_kaggle_split(DATA, "train")
    path = WORK / "refuse_chest_xray.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path"])
        writer.writerows([[chest[i].path] for i in evenly_spaced(len(chest), count)])
    return path


def recipe_of(model: str) -> str:
    """The recipe a run trains with, on either task: for DenseNet121 ``densenet121-brain-mri`` (validated for 4
    classes by ``bench.brain_mri_tuned_seeds``, for tumour vs no tumour by ``bench.brain_mri_binary_cv``), for the
    other models ``published`` (TrainConfig's defaults)."""
    return "densenet121-brain-mri" if model == "densenet121" else "published"


def settings(model: str, seed: int, classes: str, out: Path, budget: dict, recipe: str = "") -> TrainConfig:
    """A run's settings: the task, split, budget and input checks of this benchmark on ``recipe`` (default:
    ``recipe_of`` the model)."""
    checks = InputCheckSettings(refuse=(str(refuse_list()),), resampled_examples=200)  # words: data.known
    overrides = {"data": str(MRI), "model": model, "seed": seed, "out": str(out), "classes": classes,
                 "train_split": "Training", "test_split": "Testing", "group_by": "duplicates",
                 "cache_dir": str(WORK / "cache"), "input_checks": checks.to_dict(), **budget}
    if model in WEIGHTS:
        overrides.update(weights=str(WEIGHTS[model]), allow_partial_weights=model != "densenet121")
    recipe = recipe or recipe_of(model)
    # published is TrainConfig's defaults: naming it would change the recorded settings of those models' runs
    base = recipe_settings(recipe) if recipe != "published" else {}
    return load_settings(TrainConfig, base=base, overrides=overrides)


def test_rows(run: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(paths, labels, probabilities [N, K], class names) of a run's screened test images."""
    with RunFolder(run).predictions("test").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = json.loads(RunFolder(run).classes.read_text())["names"]
    if "probability_" + names[0] in rows[0]:
        prob = np.array([[float(r[f"probability_{n}"]) for n in names] for r in rows])
    else:
        positive = np.array([float(r["probability"]) for r in rows])
        prob = np.stack([1 - positive, positive], axis=1)
    return [r["path"] for r in rows], np.array([names.index(r["label"]) for r in rows]), prob, names


def run_folder(model: str, task: str, seed: int, budget: dict) -> Path:
    """Where one run lives: ``<model>_<task>_seed<seed>``, plus ``_tail<N>`` for another tail budget."""
    suffix = "" if budget == BUDGET else f"_tail{budget['tail']['epochs']}"
    return WORK / f"{model}_{task}_seed{seed}{suffix}"


def run_task(model: str, seed: int, classes: str, name: str, duplicated: set[str], budget: dict) -> dict:
    started = time.perf_counter()
    out = run_folder(model, name, seed, budget)
    folder = RunFolder(out)
    trained_here = not folder.finished()
    if trained_here:
        train(settings(model, seed, classes, out, budget), resume=folder.config.exists())
    metrics = json.loads(folder.metrics.read_text())
    paths, y, prob, names = test_rows(out)
    keep = np.array([p not in duplicated for p in paths])
    result = {"run": str(out.relative_to(ROOT)), "classes": names, "budget": budget,
              "validation": metrics["validation"].get("at_argmax") or metrics["validation"]["at_threshold"],
              "wall_seconds": round(time.perf_counter() - started, 1), "trained_in_this_invocation": trained_here,
              "train_seconds": metrics["timings"]["total_seconds"], "screening": metrics["test"]["screening"]}
    if len(names) > 2:
        result["test"] = {k: v for k, v in metrics["test"]["at_argmax"].items()}
        result["test_dedup"] = multiclass_metrics(y[keep], prob[keep], tuple(names))
    else:
        threshold = metrics["threshold"]
        result["threshold"] = threshold
        result["test"] = metrics["test"]["at_threshold"]
        result["test_dedup"] = binary_metrics(y[keep], prob[keep, 1], threshold, names=tuple(names))
    result["test_dedup"]["images"] = int(keep.sum())
    return result


def carried_binary(path: Path) -> dict:
    """The tumour vs no tumour task of an earlier result file, with the commit and machine that measured it."""
    earlier = json.loads(path.read_text())
    binary = earlier["binary"]
    return {**binary, "measured_by": binary.get("measured_by") or {
        "result": path.name, "commit": earlier["commit"], "cpu": earlier["machine"]["cpu"],
        "finished": earlier["finished"]}}


def chest_xrays_refused(run: Path) -> dict:
    """The MRI model's own input check on chest X-rays (the Kermany test split, never fitted on)."""
    from pneumoscan.evaluate.report import screening_counts

    paths = [s.path for s in scan_kaggle_split(DATA, "test")]
    counts = screening_counts(load(run).screen(paths, desc="chest X-rays to the MRI model"))
    return {"data": "shared/data/chest_xray_224/test", **counts}


def non_images_refused(run: Path, per_kind: int = 40) -> dict:
    """The MRI model's input check on made non-images and the held-out photos (``bench.qc``'s, never fitted
    on), per kind: how many it refused, and how many of those it scored it flagged as unlike its population."""
    screener = load(run)
    return {kind: summarize(screener.screen(uploads, progress=False))
            for kind, uploads in held_out_not_xray(per_kind).items()}


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="densenet121")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tail-epochs", type=int, default=BUDGET["tail"]["epochs"])
    parser.add_argument("--suffix", default="", help="appended to the result's name (brain_mri_<model><suffix>.json)")
    parser.add_argument("--binary-from", default="", help="take the tumour vs no tumour task from this result file "
                                                          "instead of training it")
    args = parser.parse_args()
    budget = {**BUDGET, "tail": {"epochs": args.tail_epochs}}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    test = scan_kaggle_split(MRI, "Testing")
    training = scan_kaggle_split(MRI, "Training")
    found = duplicates_of([s.path for s in test], [s.path for s in training])
    duplicated = {test[i].path for i in found}
    hashing = round(time.perf_counter() - started, 1)
    four = run_task(args.model, args.seed, "", "4class", duplicated, budget)
    binary = (carried_binary(Path(args.binary_from)) if args.binary_from
              else run_task(args.model, args.seed, BINARY, "binary", duplicated, budget))
    split = read_split(RunFolder(ROOT / four["run"]).split)
    result = {
        "model": args.model, "seed": args.seed, "data": "shared/data/brain_tumor_mri (official Training / Testing)",
        "protocol": "validation carved out of Training by duplicate group (data.duplicates: exact pixels, or "
                    "perceptual hash within 6 bits confirmed by a pixel correlation >= 0.95); Testing screened once",
        "budget": budget, "recipe": {"4class": recipe_of(args.model), "binary": recipe_of(args.model)},
        "split": {k: len(v) for k, v in split.items()},
        "test_duplicates": len(found),
        "test_duplicates_exact": sum(v == "exact" for v in found.values()),
        "test_duplicates_near": sum(v == "near" for v in found.values()),
        "duplicate_hashing_seconds": hashing,
        "test": four["test"], "test_dedup": four["test_dedup"], "four_class": four,
        "binary": binary,
        "chest_xrays_sent_to_the_mri_model": chest_xrays_refused(ROOT / four["run"]),
        "non_images_sent_to_the_mri_model": non_images_refused(ROOT / four["run"]),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_result(f"brain_mri_{args.model}{args.suffix}", result)
    t, d = result["test"], result["test_dedup"]
    print(f"4 classes: test accuracy {t['accuracy']:.4f} macro-F1 {t['macro_f1']:.4f}; without the "
          f"{len(found)} duplicated test images: accuracy {d['accuracy']:.4f} macro-F1 {d['macro_f1']:.4f}; "
          f"run {four['train_seconds']:.0f} s")
    b = binary["test"]
    print(f"tumour vs no tumour: accuracy {b['accuracy']:.4f} sensitivity {b['sensitivity']:.4f}")


if __name__ == "__main__":
    main()

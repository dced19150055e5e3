"""Anatomy benchmark: the lung segmenter, the lungs in every screening, and where the heatmaps fall.

    python -m bench.anatomy segmentation [--run NAME] [--set epochs=16 balance=0.5] [--reuse]
    python -m bench.anatomy screening [--run NAME]
    python -m bench.anatomy overhead
    python -m bench.anatomy focus [--models densenet121 ...] [--methods gradcam gradcam++ ...]
    python -m bench.anatomy figure

``segmentation`` trains ``pneumoscan segment train`` on ``shared/data/lung_masks`` (Kermany train and ieee8023
train; validation carved out by patient) as a user runs it, a subprocess timed from start to finish, and
records the Dice (with its bootstrap interval) and Hausdorff 95 on the Kermany test masks and on the held-out
adult films (ieee8023 ``split=test``), scored once by the run itself.

``screening`` attaches that segmenter to a copy of the default-recipe DenseNet121 run (``pneumoscan segment
attach``) and records what screening with the lungs costs (``overhead_ratio``: extra screening time with
heatmaps, alternating runs with and without the lungs on the same films), which films it refuses (the 22
lateral films, every Kermany test film, the adult frontal films), and the Dice of the lung masks the screening
itself draws on the Kermany test films.

``overhead`` times that cost again alone (run it on an otherwise idle machine: it replaces the number).

``focus`` reviews the Kermany test films that have human masks with each trained model
(``explain.anatomy.anatomy_review``: heat in the lungs against the lungs' share, peak, border, corners, per
true/false positive/negative, 95% intervals) and compares the models pairwise on the films both call
positive (Wilcoxon signed-rank). Each part writes its own block of ``bench/results/anatomy.json``, with its
commit. ``figure`` draws the README's figure from DenseNet121's review.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import DATA, RESULTS, ROOT, SHARED, launch_commit, write_result

LUNG_MASKS = SHARED / "data" / "lung_masks"
WORK = ROOT / "bench" / "work" / "anatomy"
RUNS = {"densenet121": ROOT / "bench" / "work" / "accuracy_densenet121",
        "resnet50": ROOT / "bench" / "work" / "accuracy_resnet50",
        # the published recipe's 20 epochs did not fit the session's CPU time: the focus run stops at 8
        "baseline_cnn": ROOT / "bench" / "work" / "accuracy_baseline_cnn_8_epochs"}
SEGMENTER = WORK / "lungs_balanced"  # the default settings' run (segmentation block)


def segmentation(run_name: str, settings: list[str], reuse: bool) -> dict:
    run = WORK / run_name
    started = time.perf_counter()
    if not (reuse and (run / "metrics.json").exists()):
        subprocess.run([sys.executable, "-m", "pneumoscan.cli", "segment", "train", "--data", str(LUNG_MASKS),
                        "--out", str(run), "--set", *settings], check=True)
    metrics = json.loads((run / "metrics.json").read_text())
    return {"kermany_test": metrics["test"]["kermany_test"], "adult_heldout": metrics["test"]["ieee8023_test"],
            "train_seconds": metrics["train_seconds"], "wall_seconds": round(time.perf_counter() - started, 1),
            "trained_on": metrics["trained_on"], "chosen_epoch": metrics["chosen_epoch"],
            "val_dice": metrics["val_dice"], "val_dice_by_source": metrics.get("val_dice_by_source"),
            "settings": json.loads((run / "config.json").read_text()),
            "masks": "compared at 224 x 224 (films squashed, as chest_xray_224 squashed Kermany's); pixels V7 marked "
                     "'ignore' (devices, markup) count as neither lung nor background"}


def lung_model(segmenter: Path) -> Path:
    """A copy of the default-recipe DenseNet121 run with the segmenter attached."""
    from pneumoscan.models.checkpoint import attach_segmenter

    model = WORK / "densenet121_lungs"
    shutil.rmtree(model, ignore_errors=True)
    model.mkdir(parents=True)
    for name in ("model.pt", "split.csv", "classes.json", "config.json"):
        if (RUNS["densenet121"] / name).exists():
            shutil.copy2(RUNS["densenet121"] / name, model / name)
    attach_segmenter(model, segmenter)
    return model


def overhead(plain: Path, with_lungs: Path, files: list[str], repeats: int = 3) -> dict:
    """Seconds to screen ``files`` with heatmaps, without and with the lungs, alternating (best of ``repeats``)."""
    from pneumoscan.inference.screen import load

    screeners = {"without": load(plain), "with": load(with_lungs)}
    for screener in screeners.values():  # warm up
        screener.screen(files[:16], heatmaps=True, progress=False)
    seconds = {name: [] for name in screeners}
    for _ in range(repeats):
        for name, screener in screeners.items():
            started = time.perf_counter()
            screener.screen(files, heatmaps=True, progress=False)
            seconds[name].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in seconds.items()}
    return {"images": len(files), "runtime": "pytorch fp32, batch 16", "seconds": seconds,
            "ms_per_image": {name: 1000 * value / len(files) for name, value in best.items()},
            "overhead_ratio": best["with"] / best["without"] - 1}


def refusals(screenings) -> dict:
    reasons = [s.reason for s in screenings if s.status == "refused"]
    return {"images": len(screenings), "scored": sum(s.scored for s in screenings), "refused": len(reasons),
            "refused_not_frontal": sum("not a frontal" in r for r in reasons),
            "refused_other": sum("not a frontal" not in r for r in reasons),
            "unreadable": sum(s.status == "unreadable" for s in screenings),
            "refused_files": [s.source.rsplit("/", 1)[-1] for s in screenings if s.status == "refused"][:40]}


def screening_dice(screenings, data_root: Path, masks_root: Path) -> dict:
    """Dice of the masks the screening drew against the human masks (224 px)."""
    from pneumoscan.anatomy.scores import film_scores, summary
    from pneumoscan.explain.anatomy import human_mask

    pairs = [(s.lungs, human_mask(s.source, data_root, masks_root, s.lungs.shape[0])) for s in screenings
             if s.scored and s.lungs is not None]
    pairs = [(p, t.astype(np.uint8)) for p, t in pairs if t is not None]
    return summary(film_scores([p for p, _ in pairs], [t for _, t in pairs]))


def kermany_sample(count: int) -> list[str]:
    from pneumoscan.data.records import load_samples

    test = [s.path for s in load_samples(str(DATA), "test")]
    return [test[i] for i in np.linspace(0, len(test) - 1, count).astype(int)]


def screening(segmenter_run: str) -> dict:
    from pneumoscan.anatomy.masks import read_lung_films, select
    from pneumoscan.data.records import load_samples
    from pneumoscan.inference.screen import load

    model = lung_model(WORK / segmenter_run)
    test = [s.path for s in load_samples(str(DATA), "test")]
    started = time.perf_counter()
    timed = overhead(RUNS["densenet121"], model, kermany_sample(128))
    screener = load(model)
    films = read_lung_films(LUNG_MASKS)
    kermany = screener.screen(test, heatmaps=True, desc="Kermany test")
    adults = sorted(str(p) for p in (SHARED / "data" / "adult_cxr_reference" / "images").rglob("*")
                    if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return {"segmenter": str(WORK / segmenter_run), "model": "bench/work/accuracy_densenet121 + the segmenter",
            "overhead_ratio": timed["overhead_ratio"], "overhead": timed,
            "laterals": refusals(screener.screen([f.image for f in select(films, "ieee8023", "lateral")])),
            "kermany_test": refusals(kermany),
            "kermany_test_screening_dice": screening_dice(kermany, DATA, LUNG_MASKS / "kermany"),
            "adult_frontal_heldout": refusals(screener.screen([f.image for f in select(films, "ieee8023", "test")])),
            "adult_cxr_reference": refusals(screener.screen(adults, desc="adult reference")),
            "wall_seconds": round(time.perf_counter() - started, 1)}


def review(name: str, methods: list[str]) -> None:
    """The anatomy review of one model's run on the Kermany test films with human masks (``WORK/focus/<name>``)."""
    from pneumoscan.data.records import load_samples
    from pneumoscan.explain.anatomy import anatomy_review
    from pneumoscan.models.checkpoint import load_model

    started = time.perf_counter()
    out = WORK / "focus" / name
    anatomy_review(load_model(RUNS[name]), load_samples(str(DATA), "test"), out, methods=tuple(methods),
                   data_root=str(DATA), masks_root=str(LUNG_MASKS / "kermany"))
    provenance = {"run": str(RUNS[name].relative_to(ROOT)), "commit": launch_commit(),
                  "seconds": round(time.perf_counter() - started, 1)}
    (out / "provenance.json").write_text(json.dumps(provenance) + "\n")


def gradcam_rows(name: str) -> list[dict]:
    rows = [r for r in csv.DictReader((WORK / "focus" / name / "anatomy.csv").open()) if r["method"] == "gradcam"]
    return [{**r, "heat_in_lungs": float(r["heat_in_lungs"])} for r in rows]


def focus(models: list[str], methods: list[str]) -> dict:
    """Review ``models`` with ``methods``, then summarise every model reviewed so far, with paired Grad-CAM
    comparisons between them."""
    from pneumoscan.explain.anatomy import paired_comparison

    for name in models:
        review(name, methods)
    reviewed = [name for name in RUNS if (WORK / "focus" / name / "anatomy.json").exists()]
    results = {}
    for name in reviewed:
        summaries = json.loads((WORK / "focus" / name / "anatomy.json").read_text())
        results[name] = {method: {"heat_in_lungs": summary["called_PNEUMONIA"]["heat_in_lungs"],
                                  "chance": summary["called_PNEUMONIA"]["chance"], "summary": summary}
                         for method, summary in summaries.items()}
        results[name]["provenance"] = json.loads((WORK / "focus" / name / "provenance.json").read_text())

    def positive(model_rows):
        return [r for r in model_rows if r["case"].endswith("_positive")]

    paired = {}
    for i, a in enumerate(reviewed):
        for b in reviewed[i + 1:]:
            rows_a, rows_b = gradcam_rows(a), gradcam_rows(b)
            paired[f"{a}_vs_{b}"] = {"called_PNEUMONIA_by_both": paired_comparison(positive(rows_a), positive(rows_b)),
                                     "all_films": paired_comparison(rows_a, rows_b)}
    return {"films": "Kermany test films with a human lung mask (623 of 624), lungs from the human masks",
            "lungs_definition": "V7 masks: both lung fields drawn as polygons that include the lung behind the "
                                "heart and most of the heart shadow",
            "headline": "heat_in_lungs and chance: means over the films the model called PNEUMONIA, 95% bootstrap "
                        "intervals over films",
            **results, "paired_gradcam": paired}


def figure(path: Path = ROOT / "docs" / "figures" / "where_the_model_looks.png") -> dict:
    """Three Kermany test films called PNEUMONIA by DenseNet121, its Grad-CAM and the human lung outline: the
    true positive with the median heat in the lungs, the one with the least, and the median false positive."""
    from pneumoscan.evaluate.plots import subplots
    from pneumoscan.explain.anatomy import human_mask
    from pneumoscan.explain.render import overlay
    from pneumoscan.inference.screen import load

    rows = gradcam_rows("densenet121")
    true = sorted((r for r in rows if r["case"] == "true_positive"), key=lambda r: r["heat_in_lungs"])
    false = sorted((r for r in rows if r["case"] == "false_positive"), key=lambda r: r["heat_in_lungs"])
    picks = {"true positive, median": true[len(true) // 2], "true positive, least in the lungs": true[0],
             "false positive, median": false[len(false) // 2]}
    screenings = load(RUNS["densenet121"]).screen([r["path"] for r in picks.values()], heatmaps=True, progress=False)
    fig, axes = subplots(1, 3, figsize=(9.6, 3.6))
    for ax, (title, row), screening in zip(axes, picks.items(), screenings):
        lungs = human_mask(row["path"], DATA, LUNG_MASKS / "kermany", screening.heatmap.shape[0])
        ax.imshow(overlay(screening.image, screening.heatmap, lungs=lungs))
        ax.set_title(f"{title}\nheat in lungs {row['heat_in_lungs']:.0%} (lungs {float(row['chance']):.0%} of film)",
                     fontsize=8)
        ax.axis("off")
    fig.suptitle("DenseNet121 Grad-CAM on Kermany test films; white: the human lung outline", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return {"figure": str(path.relative_to(ROOT)), "films": {k: r["path"].rsplit("/", 1)[-1] for k, r in picks.items()}}


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["segmentation", "screening", "overhead", "focus", "figure"])
    parser.add_argument("--run", default="lungs_balanced", help="the segmenter run folder's name under "
                                                                "bench/work/anatomy")
    parser.add_argument("--set", nargs="*", default=[], help="segment train settings, e.g. epochs=16 balance=0.5")
    parser.add_argument("--reuse", action="store_true", help="score a finished run again instead of training")
    parser.add_argument("--methods", nargs="*", default=["gradcam", "gradcam++", "hirescam", "eigencam"],
                        help="explanation methods for each model reviewed")
    parser.add_argument("--models", nargs="*", default=list(RUNS), choices=list(RUNS),
                        help="the models to review now (the block summarises every model reviewed so far)")
    args = parser.parse_args()
    previous = json.loads((RESULTS / "anatomy.json").read_text()) if (RESULTS / "anatomy.json").exists() else {}
    started = time.perf_counter()
    if args.part == "segmentation":
        block = segmentation(args.run, args.set, args.reuse)
    elif args.part == "screening":
        block = screening(args.run)
    elif args.part == "overhead":
        block = overhead(RUNS["densenet121"], WORK / "densenet121_lungs", kermany_sample(128), repeats=5)
    elif args.part == "figure":
        block = figure()
    else:
        block = focus(args.models, args.methods)
    block |= {"commit": launch_commit(), "part_wall_seconds": round(time.perf_counter() - started, 1)}
    result = {**previous, "data": "shared/data/lung_masks", args.part: block}
    # the keys: segmentation.overhead_ratio, laterals.images, laterals.scored
    if args.part in ("screening", "overhead"):
        result["segmentation"] = {**result.get("segmentation", {}), "overhead_ratio": block["overhead_ratio"]}
        if "laterals" in block:
            result["laterals"] = {k: block["laterals"][k] for k in ("images", "scored", "refused_not_frontal")}
        else:  # the overhead part times again what the screening part timed
            result["screening"] = {**result.get("screening", {}), "overhead_ratio": block["overhead_ratio"],
                                   "overhead": block}
    write_result("anatomy", result)


if __name__ == "__main__":
    main()

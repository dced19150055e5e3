"""What DenseNet121 and ResNet50 look at on brain MRI, in numbers and pictures.

    python -m bench.brain_mri_explain [--images 160] [--runs densenet121=RUN resnet50=RUN]

Needs the 4-class runs of ``bench.brain_mri`` for both models. On test images evenly spaced over the
official Testing split (screened first, as every entry point does), each model's Grad-CAM of the class it
predicts:

- mass outside the head: the share of a map's mass outside an intensity mask of the head (Otsu threshold,
  holes filled, largest component), beside the share of the image area outside it (what a map spread
  evenly would put there); per model and per true class;
- agreement of the two models (Spearman rank correlation, IoU of the top 20%) on the images both call the
  same class;
- deletion and insertion AUCs of the predicted class's probability, with smooth random maps and a centre
  prior explaining the same class as baselines;
- per model, a gallery of each class's most confident hits and every error of the whole Testing split
  (``review_gallery``), in ``bench/work/brain_mri_explain/<model>/``; one overview grid per model goes to
  ``bench/results/brain_mri_gallery_<model>.jpg``.

Writes ``bench/results/brain_mri_explain.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu

from bench.brain_mri import BUDGET, MRI, run_folder
from bench.common import RESULTS, ROOT, launch_commit, write_result
from pneumoscan.data.records import Sample, scan_kaggle_split
from pneumoscan.data.split import evenly_spaced
from pneumoscan.device import effective_precision
from pneumoscan.explain.checks import baseline_maps, deletion_insertion
from pneumoscan.explain.methods import heatmap_agreement
from pneumoscan.explain.render import overlay, save_grid
from pneumoscan.explain.run import Explained, explain_batches, review_gallery
from pneumoscan.models.checkpoint import LoadedModel, load_model
from pneumoscan.run_folder import RunFolder

WORK = ROOT / "bench" / "work" / "brain_mri_explain"
RUNS = {model: run_folder(model, "4class", 0, BUDGET) for model in ("densenet121", "resnet50")}


def head_mask(gray: np.ndarray) -> np.ndarray:
    """The head in an MRI slice: pixels above Otsu's threshold, holes filled, the largest component."""
    if np.ptp(gray) == 0:
        return np.ones(gray.shape, bool)
    filled = ndimage.binary_fill_holes(gray > threshold_otsu(gray))
    components, count = ndimage.label(filled)
    if count == 0:
        return np.ones(gray.shape, bool)
    sizes = ndimage.sum(filled, components, range(1, count + 1))
    return components == 1 + int(np.argmax(sizes))


def mass_outside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    total = float(heatmap.sum())
    return float(heatmap[~mask].sum() / total) if total > 0 else float("nan")


def explained_items(loaded: LoadedModel, paths: list[str], name: str) -> dict[str, Explained]:
    """Grad-CAM of the predicted class, by path, for every scored image."""
    items = explain_batches(loaded, paths, desc=f"Grad-CAM {name}")
    return {item.path: item for item in items if isinstance(item, Explained)}


def faithfulness(loaded: LoadedModel, items: list[Explained], batch: int = 16) -> dict:
    """Mean deletion / insertion AUCs of Grad-CAM and of the two baselines explaining the same class."""
    names, pre = loaded.classes.names, loaded.preprocessing
    precision = effective_precision("bf16", "cpu")
    scores = {m: {"deletion_auc": [], "insertion_auc": []} for m in ("gradcam", "random", "center")}
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        images = torch.stack([pre.normalize(torch.as_tensor(i.gray)[None]) for i in chunk])
        explained = np.array([names.index(i.explained) for i in chunk])
        gradcam_maps = np.stack([i.heatmap for i in chunk])
        maps = {"gradcam": gradcam_maps, **baseline_maps(gradcam_maps.shape, seed=start)}
        for method, heatmaps in maps.items():
            curve = deletion_insertion(loaded.model.eval(), images, heatmaps, explained, precision=precision)
            for key, values in curve.items():
                scores[method][key] += list(values)
    result = {m: {k: float(np.mean(v)) for k, v in s.items()} for m, s in scores.items()}
    result["gradcam_beats_both_baselines"] = all(
        result["gradcam"]["deletion_auc"] < result[b]["deletion_auc"]
        and result["gradcam"]["insertion_auc"] > result[b]["insertion_auc"] for b in ("random", "center"))
    result["images"], result["precision"] = len(items), precision
    return result


def outside_the_head(items: list[Explained], truth: dict[str, str]) -> dict:
    masks = [head_mask(i.gray) for i in items]
    outside = np.array([mass_outside(i.heatmap, m) for i, m in zip(items, masks)])
    area = np.array([1 - m.mean() for m in masks])
    true_class = np.array([truth[i.path] for i in items])
    return {"mean": float(np.nanmean(outside)), "area_outside_mean": float(area.mean()),
            "images_with_most_mass_outside": int(np.sum(outside > 0.5)),
            "per_class": {c: {"mean": float(np.nanmean(outside[true_class == c])),
                              "area_outside_mean": float(area[true_class == c].mean())}
                          for c in sorted(set(true_class))}}


def agreement(a: dict[str, Explained], b: dict[str, Explained]) -> dict:
    same = [p for p in a if p in b and a[p].label == b[p].label]
    values = [heatmap_agreement(a[p].heatmap, b[p].heatmap) for p in same]
    return {"images": len(same), "images_called_differently": sum(p in b and a[p].label != b[p].label for p in a),
            "mean_spearman": float(np.mean([v["spearman"] for v in values])),
            "mean_top_iou": float(np.mean([v["top_iou"] for v in values]))}


def gallery(model: str, loaded: LoadedModel, run: Path, testing: dict[str, Sample]) -> dict:
    """Each class's confident hits and every error of the Testing split, with the run's own predictions."""
    names = loaded.classes.names
    with RunFolder(run).predictions("test").open(newline="") as handle:  # label: the truth; predicted: the call
        rows = [r for r in csv.DictReader(handle) if r.get("predicted") in names]
    samples = [testing[r["path"]] for r in rows]
    predicted = np.array([names.index(r["predicted"]) for r in rows])
    confidence = np.array([float(r[f"probability_{r['predicted']}"]) for r in rows])
    counts = review_gallery(loaded, samples, confidence, WORK / model, predicted=predicted, confident=4)
    overview(model, loaded, samples, predicted, confidence)
    return counts


def overview(model: str, loaded, samples, predicted: np.ndarray, confidence: np.ndarray, per_class: int = 4) -> None:
    """One grid: per true class its most confident hits and its most confident errors."""
    names = loaded.classes.names
    truth = np.array([s.label for s in samples])
    chosen = []
    for k in range(len(names)):
        order = [i for i in np.argsort(-confidence) if truth[i] == k]
        hits, errors = [i for i in order if predicted[i] == k], [i for i in order if predicted[i] != k]
        chosen += hits[:per_class] + errors[:per_class]
    items = [i for i in explain_batches(loaded, [samples[i].path for i in chosen]) if isinstance(i, Explained)]
    true_of = {samples[i].path: names[truth[i]] for i in chosen}
    grid = save_grid(WORK / f"overview_{model}.png", [overlay(i.gray, i.heatmap) for i in items],
                     [f"true {true_of[i.path]}, called {i.label} {i.probability:.2f}" for i in items],
                     title=f"{model}: Grad-CAM of the predicted class, per true class its hits and errors", columns=8)
    small_copy(grid, RESULTS / f"brain_mri_gallery_{model}.jpg")


def small_copy(picture: Path, out: Path, width: int = 1600) -> None:
    """A JPEG of ``picture`` at ``width`` px, small enough to keep with the results."""
    from PIL import Image

    image = Image.open(picture).convert("RGB")
    image.resize((width, round(image.height * width / image.width)), Image.LANCZOS).save(out, quality=85)


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--runs", nargs=2, default=[f"{m}={p}" for m, p in RUNS.items()])
    parser.add_argument("--gallery-only", action="store_true",
                        help="only make the galleries again, keeping the numbers of brain_mri_explain.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    runs = {m: Path(p) for m, p in (item.split("=", 1) for item in args.runs)}
    models = {m: load_model(run) for m, run in runs.items()}
    test = scan_kaggle_split(MRI, "Testing")
    testing = {s.path: s for s in test}
    if args.gallery_only:
        result = json.loads((RESULTS / "brain_mri_explain.json").read_text())
        for model, run in runs.items():
            result[model]["gallery"] = gallery(model, models[model], run, testing)
        result["numbers_commit"] = result.get("numbers_commit", result["commit"])  # the galleries: ``commit``
        write_result("brain_mri_explain", {k: v for k, v in result.items() if k not in ("commit", "machine")})
        return
    names = next(iter(models.values())).classes.names
    chosen = [test[i] for i in evenly_spaced(len(test), args.images)]
    truth = {s.path: names[s.label] for s in chosen}
    explained = {m: explained_items(models[m], [s.path for s in chosen], run.name) for m, run in runs.items()}
    result = {"data": f"shared/data/brain_tumor_mri Testing, {args.images} images evenly spaced",
              "runs": {m: str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for m, p in runs.items()},
              "method": "gradcam of each model's predicted class"}
    for model, run in runs.items():
        items = list(explained[model].values())
        result[model] = {"explained": len(items), "mass_outside_head": outside_the_head(items, truth),
                         "faithfulness": faithfulness(models[model], items),
                         "gallery": gallery(model, models[model], run, testing)}
        logging.info("%s: %s", model, {k: v for k, v in result[model].items() if k != "gallery"})
    first, second = list(runs)
    result["agreement"] = {"models": [first, second], **agreement(explained[first], explained[second])}
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_result("brain_mri_explain", result)


if __name__ == "__main__":
    main()

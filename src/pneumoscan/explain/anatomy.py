"""Explanations measured against anatomy (``pneumoscan explain --review SPLIT --anatomy``): for every scored
image of a split, where each method's heatmap falls (``anatomy.focus``: energy inside the lungs against the
lungs' share of the film, the peak in the lungs, energy on the border strip and in the corners), split by true
and false positives and negatives, with 95% bootstrap intervals and a signed-rank test against chance.

The lungs are the human masks of a mask folder laid out like the data folder (``--masks``: the same relative
path with ``.png``; pixels above half its maximum are lung), else the model's own segmenter's
(``pneumoscan segment attach``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import stats

from pneumoscan.anatomy.focus import BORDER, CORNER, border_strip, corner_squares, focus
from pneumoscan.data.records import Sample
from pneumoscan.explain.render import overlay, save_grid
from pneumoscan.models.checkpoint import LoadedModel

NUMBERS = ("heat_in_lungs", "chance", "peak_in_lungs", "border", "corners")


def human_mask(sample_path: str, data_root: str | Path, masks_root: str | Path, size: int) -> np.ndarray | None:
    """The human lung mask of an image of ``data_root`` (``masks_root``/<same relative path>.png) at ``size``, or
    ``None`` where the mask folder has none."""
    relative = Path(sample_path).resolve().relative_to(Path(data_root).resolve())
    path = Path(masks_root) / relative.with_suffix(".png")
    if not path.is_file():
        return None
    mask = np.asarray(Image.open(path).convert("L").resize((size, size), Image.NEAREST))
    return mask > mask.max() / 2 if mask.max() else mask.astype(bool)


def case_of(truth: int, label_index: int) -> str:
    """Two classes: true/false positive/negative."""
    return ("true" if truth == label_index else "false") + ("_positive" if label_index == 1 else "_negative")


def focus_rows(loaded: LoadedModel, samples: list[Sample], *, method: str = "gradcam", data_root: str = "",
               masks_root: str = "", overlays: dict | None = None) -> list[dict]:
    """One row per scored image that has lungs (a human mask, or the segmenter's): its case and focus numbers.
    With ``overlays`` (a dict), each image's overlay with the lung outline is kept by path."""
    from pneumoscan.explain.run import Explained, explain_batches

    if not loaded.classes.binary:
        raise ValueError("the anatomy review splits images into true/false positives and negatives: it needs a "
                         "two-class model")
    truth = {s.path: s.label for s in samples}
    size = loaded.preprocessing.image_size
    rows = []
    for item in explain_batches(loaded, [s.path for s in samples], method=method, desc=f"{method} vs anatomy"):
        if not isinstance(item, Explained):
            continue
        lungs = human_mask(item.path, data_root, masks_root, size) if masks_root else item.lungs
        measured = focus(item.heatmap, lungs) if lungs is not None and lungs.any() else None
        if measured is None:
            continue
        label = loaded.classes.names.index(item.label)
        rows.append({"path": item.path, "method": method, "case": case_of(truth[item.path], label),
                     "label": item.label, "probability": item.probability,
                     "lungs": "human" if masks_root else "segmenter", **measured.to_dict()})
        if overlays is not None:
            overlays[item.path] = overlay(item.gray, item.heatmap, lungs=lungs)
    return rows


def mean_interval(values, *, seed: int = 0) -> dict:
    """Mean with its 95% percentile bootstrap interval (scipy), over images."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return {"mean": float(values.mean()) if len(values) else None, "ci95": None, "n": len(values)}
    result = stats.bootstrap((values,), np.mean, n_resamples=2000, method="percentile",
                             random_state=np.random.default_rng(seed))
    return {"mean": float(values.mean()), "ci95": [float(result.confidence_interval.low),
                                                   float(result.confidence_interval.high)], "n": len(values)}


def against_chance(rows: list[dict]) -> dict:
    """The focus numbers of ``rows`` with intervals, and heat in the lungs against chance (paired by image)."""
    if not rows:
        return {"images": 0}
    heat = np.array([r["heat_in_lungs"] for r in rows])
    chance = np.array([r["chance"] for r in rows])
    summary = {"images": len(rows), **{name: mean_interval([float(r[name]) for r in rows]) for name in NUMBERS}}
    summary["heat_over_chance"] = mean_interval(heat - chance)
    summary["wilcoxon_p_vs_chance"] = (float(stats.wilcoxon(heat, chance).pvalue) if len(rows) > 1 and
                                       np.any(heat != chance) else None)
    return summary


def summarise(rows: list[dict], positive: str, side: int) -> dict:
    """Per case, for every image, and for the images called ``positive`` (true and false positives); the border
    and corner areas are of maps ``side`` pixels square."""
    groups = {"all": rows, f"called_{positive}": [r for r in rows if r["case"].endswith("_positive")]}
    groups |= {case: [r for r in rows if r["case"] == case]
               for case in ("true_positive", "false_positive", "true_negative", "false_negative")}
    return {"areas": {"border": float(border_strip((side, side)).mean()),
                      "corners": float(corner_squares((side, side)).mean()),
                      "border_width": BORDER, "corner_side": CORNER},
            **{name: against_chance(group) for name, group in groups.items()}}


def paired_comparison(first: list[dict], second: list[dict], key: str = "heat_in_lungs") -> dict:
    """Two models' (or methods') ``key`` on the images both measured: mean difference with its interval and the
    Wilcoxon signed-rank test."""
    a = {r["path"]: r[key] for r in first}
    b = {r["path"]: r[key] for r in second}
    common = sorted(set(a) & set(b))
    difference = np.array([a[p] - b[p] for p in common], dtype=float)
    return {"images": len(common), "difference": mean_interval(difference),
            "wilcoxon_p": float(stats.wilcoxon(difference).pvalue) if np.any(difference) else None}


def anatomy_review(loaded: LoadedModel, samples: list[Sample], out_dir: str | Path, *,
                   methods: tuple[str, ...] = ("gradcam",), data_root: str = "", masks_root: str = "",
                   per_grid: int = 24) -> dict:
    """``anatomy.csv`` (a row per image and method), ``anatomy.json`` (the summaries) and, per method, a grid of
    the called-positive films with the lung outline; returns the summaries."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    positive = loaded.classes.names[1]
    summaries, everything = {}, []
    for method in methods:
        pictures: dict = {}
        rows = focus_rows(loaded, samples, method=method, data_root=data_root, masks_root=masks_root,
                          overlays=pictures)
        everything += rows
        summaries[method] = summarise(rows, positive, loaded.preprocessing.image_size)
        shown = [r for r in rows if r["case"].endswith("_positive")][:per_grid]
        if shown:
            save_grid(out_dir / f"anatomy_{method}.png", [pictures[r["path"]] for r in shown],
                      [f"{Path(r['path']).name}\n{r['case'].replace('_', ' ')}, lungs {r['heat_in_lungs']:.0%} "
                       f"(chance {r['chance']:.0%})" for r in shown],
                      title=f"{method}: heat in the lungs (outlined) on films called {positive}")
    if everything:
        with (out_dir / "anatomy.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(everything[0]))
            writer.writeheader()
            writer.writerows(everything)
    (out_dir / "anatomy.json").write_text(json.dumps(summaries, indent=2) + "\n")
    return summaries

"""``pneumoscan explain``: heatmaps for files, the misclassification review of a split, and two
models side by side. Work is done in batches so memory stays flat over thousands of images. Files
are screened first (``screen.Screener``): unreadable and refused ones (not a chest X-ray, blank,
colour) are reported and skipped, as every other entry point does.
"""

from __future__ import annotations

import csv
import html
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pneumoscan.data.records import Sample
from pneumoscan.explain.gradcam import SCALES
from pneumoscan.explain.methods import explain, heatmap_agreement
from pneumoscan.explain.render import overlay, panel_title, save_grid, save_panel
from pneumoscan.models.checkpoint import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class Explained:
    """One explained image: where it came from, what the model said, and the map."""

    path: str
    gray: np.ndarray          # the resized grayscale input in [0, 1]
    heatmap: np.ndarray       # [S, S] in [0, 1]
    probability: float        # two classes: the positive class's; more: the predicted class's
    empty: bool
    label: str = ""           # the model's decision (screen.Screener's)
    explained: str = ""       # the class the map explains
    warning: str = ""         # why the screening flagged the image ("" when it did not)
    lungs: np.ndarray | None = None  # the screening's lung mask (a model that draws the lungs)


def explain_batches(loaded: LoadedModel, paths: list[str], *, method: str = "gradcam", target: str = "predicted",
                    batch_size: int = 16, precision: str = "fp32", desc: str = "explaining", scale: str = "image"):
    """Yield, in input order, ``Explained`` per scored path and ``(path, reason)`` per unreadable or refused one."""
    from pneumoscan.inference.screen import load

    screener = load(loaded)
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", leave=False):
        chunk = paths[start:start + batch_size]
        grays, errors, screened = {}, {}, {}
        for result in screener.screen(chunk, heatmaps=True, batch_size=batch_size, progress=False,
                                      target=None if target == "predicted" else target):
            if result.scored:
                grays[result.source] = torch.as_tensor(result.image)
                screened[result.source] = result
            else:
                log.warning("skipping %s (%s): %s", result.source, result.status, result.reason)
                errors[result.source] = f"{result.status}: {result.reason}"
        maps = screened_maps(screened, scale) if method == "gradcam" else other_maps(
            loaded, screened, grays, method=method, precision=precision, scale=scale)
        for path in chunk:
            if path in errors:
                yield path, errors[path]
                continue
            screening, heatmap = screened[path], maps[path]
            yield Explained(path, grays[path].numpy(), heatmap, float(screening.probability), not heatmap.any(),
                            label=screening.label, explained=screening.explained, warning=screening.warning,
                            lungs=screening.lungs)


def screened_maps(screened: dict, scale: str) -> dict[str, np.ndarray]:
    """Grad-CAM as the screening computed it (the served map, in every runtime), dimmed by the explained
    class's probability with ``scale="probability"``."""
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r}: choose one of {SCALES}")
    return {path: s.heatmap * (s.probabilities[s.explained] if scale == "probability" else 1.0)
            for path, s in screened.items()}


def other_maps(loaded: LoadedModel, screened: dict, grays: dict, *, method: str, precision: str,
               scale: str) -> dict[str, np.ndarray]:
    """``method``'s maps of the classes the screenings explained."""
    if not grays:
        return {}
    names = loaded.classes.names
    images = torch.stack([loaded.preprocessing.normalize(g[None]) for g in grays.values()])
    decided = torch.tensor([names.index(screened[path].explained) for path in grays])
    result = explain(loaded.model.eval(), images, method=method, threshold=loaded.threshold, precision=precision,
                     classes=names, scale=scale, explained=decided)
    return dict(zip(grays, result.heatmaps))


def explain_files(loaded: LoadedModel, paths: list[str], out_dir: str | Path, *, method: str = "gradcam",
                  target: str = "predicted", labels: dict[str, int] | None = None, save_arrays: bool = False,
                  batch_size: int = 16, overlays: list | None = None, scale: str = "image") -> list[dict]:
    """A panel PNG (and optionally the map as .npy) per image, plus ``explanations.csv`` and ``index.html``.

    When ``overlays`` is a list, ``(overlay RGB, caption)`` of every explained image is appended to it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    names = loaded.classes.names
    threshold = loaded.threshold if loaded.classes.binary else None
    for item in explain_batches(loaded, paths, method=method, target=target, batch_size=batch_size, scale=scale):
        if isinstance(item, tuple):
            rows.append({"path": item[0], "error": item[1]})
            continue
        stem = _unique_stem(out_dir, item.path)
        true = names[labels[item.path]] if labels and item.path in labels else None
        title = panel_title(item.label, item.probability, threshold=threshold, true_label=true, method=method,
                            explained=item.explained)
        save_panel(out_dir / f"{stem}.png", item.gray, item.heatmap, empty=item.empty, lungs=item.lungs,
                   title=f"FLAGGED: unlike the training population\n{title}" if item.warning else title)
        if save_arrays:
            np.save(out_dir / f"{stem}.npy", item.heatmap.astype(np.float32))
        if overlays is not None:
            overlays.append((overlay(item.gray, item.heatmap, lungs=item.lungs),
                             f"{Path(item.path).name}\np={item.probability:.3f}" + (f", true {true}" if true else "")))
        rows.append({"path": item.path, "probability": round(item.probability, 6), "label": item.label,
                     "explained": item.explained, "empty_map": item.empty, "flagged": bool(item.warning),
                     "warning": item.warning, "panel": f"{stem}.png", "error": ""})
    _write_rows(out_dir / "explanations.csv", rows)
    _write_index(out_dir / "index.html", f"pneumoscan explanations ({method})", {"images": rows})
    return rows


def _unique_stem(out_dir: Path, path: str) -> str:
    stem = Path(path).stem
    candidate, n = stem, 1
    while (out_dir / f"{candidate}.png").exists():
        n += 1
        candidate = f"{stem}_{n}"
    return candidate


def review_cases(samples: list[Sample], probabilities: np.ndarray, threshold: float, *,
                 confident: int = 8) -> dict[str, list[int]]:
    """Indices of the most confident true positives and negatives, and of every error."""
    y = np.array([s.label for s in samples])
    called = probabilities >= threshold
    order = np.argsort(-probabilities)
    tp = [i for i in order if y[i] == 1 and called[i]][:confident]
    tn = [i for i in order[::-1] if y[i] == 0 and not called[i]][:confident]
    fp = [i for i in order if y[i] == 0 and called[i]]
    fn = [i for i in order[::-1] if y[i] == 1 and not called[i]]
    return {"true_positives": tp, "true_negatives": tn, "false_positives": fp, "false_negatives": fn}


def review_cases_by_class(samples: list[Sample], predicted: np.ndarray, confidence: np.ndarray,
                          names: tuple[str, ...], *, confident: int = 8) -> dict[str, list[int]]:
    """More than two classes: per class its most confident correct images and every image of it taken for
    another class (``confidence``: the probability of the predicted class)."""
    y = np.array([s.label for s in samples])
    order = np.argsort(-confidence)
    cases = {}
    for k, name in enumerate(names):
        cases[f"correct_{name}"] = [i for i in order if y[i] == k and predicted[i] == k][:confident]
        cases[f"errors_{name}"] = [i for i in order if y[i] == k and predicted[i] != k]
    return cases


def review_gallery(loaded: LoadedModel, samples: list[Sample], probabilities: np.ndarray, out_dir: str | Path, *,
                   method: str = "gradcam", confident: int = 8, per_grid: int = 24,
                   predicted: np.ndarray | None = None) -> dict[str, int]:
    """PNG grids of the confident hits and every error, with panels and an ``index.html``. Two classes:
    ``probabilities`` of the positive class; more: of the ``predicted`` class indices."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if loaded.classes.binary:
        cases = review_cases(samples, probabilities, loaded.threshold, confident=confident)
    else:
        cases = review_cases_by_class(samples, predicted, probabilities, loaded.classes.names, confident=confident)
    sections = {}
    for category, indices in cases.items():
        chosen = [samples[i] for i in indices]
        labels = {s.path: s.label for s in chosen}
        pictures: list = []
        rows = explain_files(loaded, [s.path for s in chosen], out_dir / category, method=method,
                             target="predicted", labels=labels, overlays=pictures)
        for page, start in enumerate(range(0, len(pictures), per_grid)):
            chunk = pictures[start:start + per_grid]
            limit = f", threshold {loaded.threshold:.3f}" if loaded.classes.binary else ""
            save_grid(out_dir / f"{category}_{page + 1}.png", [p for p, _ in chunk], [c for _, c in chunk],
                      title=f"{category.replace('_', ' ')} ({len(pictures)}){limit}")
        for row in rows:
            if row.get("panel"):
                row["panel"] = f"{category}/{row['panel']}"
        sections[category] = rows
    _write_index(out_dir / "index.html", f"Misclassification review ({method})", sections,
                 grids=sorted(p.name for p in out_dir.glob("*_*.png")))
    return {k: len(v) for k, v in cases.items()}


def compare_models(first: LoadedModel, second: LoadedModel, paths: list[str], out_dir: str | Path, *,
                   method: str = "gradcam", names: tuple[str, str] = ("A", "B")) -> dict:
    """Both models' heatmaps side by side per image, with their agreement (Spearman, top-20% IoU)."""
    from pneumoscan.evaluate.plots import subplots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    a_items = [i for i in explain_batches(first, paths, method=method) if isinstance(i, Explained)]
    b_items = {i.path: i for i in explain_batches(second, paths, method=method) if isinstance(i, Explained)}
    rows = []
    for a in a_items:
        b = b_items[a.path]
        agreement = heatmap_agreement(a.heatmap, b.heatmap)
        fig, axes = subplots(1, 3, figsize=(10, 3.8))
        axes[0].imshow(a.gray, cmap="gray")
        axes[0].set_title(Path(a.path).name, fontsize=8)
        axes[1].imshow(overlay(a.gray, a.heatmap))
        axes[1].set_title(f"{names[0]}: p={a.probability:.3f}", fontsize=9)
        axes[2].imshow(overlay(b.gray, b.heatmap))
        axes[2].set_title(f"{names[1]}: p={b.probability:.3f}", fontsize=9)
        for ax in axes:
            ax.axis("off")
        fig.suptitle(f"agreement: Spearman {agreement['spearman']:.2f}, top-20% IoU {agreement['top_iou']:.2f}",
                     fontsize=9)
        stem = _unique_stem(out_dir, a.path)
        fig.savefig(out_dir / f"{stem}.png", dpi=100, bbox_inches="tight")
        rows.append({"path": a.path, f"p_{names[0]}": round(a.probability, 6), f"p_{names[1]}": round(b.probability, 6),
                     **{k: round(v, 4) for k, v in agreement.items()}, "panel": f"{stem}.png"})
    _write_rows(out_dir / "agreement.csv", rows)
    summary = {"images": len(rows),
               "mean_spearman": float(np.mean([r["spearman"] for r in rows])) if rows else float("nan"),
               "mean_top_iou": float(np.mean([r["top_iou"] for r in rows])) if rows else float("nan")}
    _write_index(out_dir / "index.html", f"{names[0]} vs {names[1]} ({method}): mean Spearman "
                 f"{summary['mean_spearman']:.2f}, mean top-20% IoU {summary['mean_top_iou']:.2f}", {"images": rows})
    return summary


def _write_rows(path: Path, rows: list[dict]) -> None:
    fields = sorted({k for row in rows for k in row}, key=lambda k: (k != "path", k))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields or ["path"])
        writer.writeheader()
        writer.writerows(rows)


def _write_index(path: Path, title: str, sections: dict[str, list[dict]], *, grids: list[str] = ()) -> None:
    """A static page (no external assets) linking every grid and panel."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}td{padding:2px 8px}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<h3>{html.escape(g)}</h3><img src='{html.escape(g)}'>" for g in grids]
    for name, rows in sections.items():
        parts.append(f"<h2>{html.escape(name.replace('_', ' '))} ({len(rows)})</h2><table>")
        for row in rows:
            cells = "".join(f"<td>{html.escape(str(v))}</td>" for k, v in row.items() if k != "panel")
            link = f"<td><a href='{html.escape(row['panel'])}'>panel</a></td>" if row.get("panel") else ""
            parts.append(f"<tr>{cells}{link}</tr>")
        parts.append("</table>")
    path.write_text("\n".join(parts) + "\n")

"""Evaluating predictions on a labelled split: metrics with CIs, plots, and the predictions table."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from pneumoscan.data.labels import CLASSES
from pneumoscan.evaluate import plots
from pneumoscan.evaluate.metrics import binary_metrics, bootstrap_ci

log = logging.getLogger(__name__)


def evaluate_split(y_true, prob, *, threshold: float, name: str, out_dir: str | Path | None = None,
                   n_boot: int = 1000, seed: int = 0) -> dict:
    """Metrics at ``threshold`` and at 0.5, each with bootstrap 95% CIs; plots written to ``out_dir``."""
    y_true, prob = np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)
    result = {
        "at_threshold": binary_metrics(y_true, prob, threshold),
        "at_0.5": binary_metrics(y_true, prob, 0.5),
    }
    result["at_threshold"]["ci95"] = bootstrap_ci(y_true, prob, threshold, n_boot=n_boot, seed=seed)
    result["at_0.5"]["ci95"] = bootstrap_ci(y_true, prob, 0.5, n_boot=n_boot, seed=seed)
    if out_dir is not None:
        result["plots"] = write_plots(y_true, prob, threshold, name, Path(out_dir))
    m = result["at_threshold"]
    log.info("%s: AUC %.4f, accuracy %.4f, sensitivity %.4f, specificity %.4f at threshold %.4f",
             name, m["auc"], m["accuracy"], m["sensitivity"], m["specificity"], threshold)
    return result


def write_plots(y_true, prob, threshold: float, name: str, out_dir: Path) -> list[str]:
    """ROC (with both operating points), PR, confusion matrix, calibration and score histogram."""
    out_dir.mkdir(parents=True, exist_ok=True)
    at_t = binary_metrics(y_true, prob, threshold)
    at_half = binary_metrics(y_true, prob, 0.5)
    points = {f"threshold {threshold:.3f}": (1 - at_t["specificity"], at_t["sensitivity"]),
              "threshold 0.5": (1 - at_half["specificity"], at_half["sensitivity"])}
    written = [
        plots.plot_roc({f"{name} (AUC {at_t['auc']:.3f})": (y_true, prob)}, out_dir / f"roc_{name}.png",
                       points=points, title=f"ROC, {name}"),
        plots.plot_pr(y_true, prob, out_dir / f"pr_{name}.png", label=f"AP {at_t['average_precision']:.3f}",
                      title=f"Precision-recall, {name}"),
        plots.plot_confusion(at_t["confusion_matrix"], out_dir / f"confusion_{name}.png",
                             title=f"{name}, threshold {threshold:.3f}"),
        plots.plot_calibration(y_true, prob, out_dir / f"calibration_{name}.png", title=f"Calibration, {name}"),
        plots.plot_score_histogram(y_true, prob, threshold, out_dir / f"scores_{name}.png",
                                   title=f"Scores, {name}"),
    ]
    return [str(p.name) for p in written]


def write_predictions(path: str | Path, paths: list[str], y_true, prob, threshold: float) -> None:
    """A CSV of ``path,label,probability,predicted,threshold`` rows.

    Probabilities are written exactly (shortest round-trip form), not rounded: a confident model puts
    many test images within 1e-6 of 1, and rounding them to ties would change the AUC that
    ensembles and pair tests compute from this file.
    """
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "probability", "predicted", "threshold"])
        for p, y, s in zip(paths, y_true, prob):
            writer.writerow([p, CLASSES[int(y)], repr(float(s)), CLASSES[int(s >= threshold)], f"{threshold:.6f}"])


def read_predictions(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(paths, labels 0/1, probabilities)`` from a CSV written by :func:`write_predictions`."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return ([r["path"] for r in rows], np.array([CLASSES.index(r["label"]) for r in rows]),
            np.array([float(r["probability"]) for r in rows]))


def write_json(path: str | Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON (atomically: a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def evaluate_model(loaded, samples, *, out_dir: str | Path, name: str, n_boot: int = 1000,
                   precision: str = "bf16", workers: int = 0) -> dict:
    """Predict ``samples`` with a loaded model and evaluate at its saved threshold; writes
    ``metrics_<name>.json``, ``predictions_<name>.csv`` and plots into ``out_dir``."""
    from pneumoscan.predict import predict_logits, sigmoid

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [s.path for s in samples]
    logits, errors = predict_logits(loaded.model, paths, precision=precision, workers=workers, desc=name)
    ok = np.array([not e for e in errors])
    for path, error in zip(paths, errors):
        if error:
            log.warning("skipping %s: %s", path, error)
    y = np.array([s.label for s in samples])[ok]
    prob = sigmoid(logits[ok])
    result = evaluate_split(y, prob, threshold=loaded.threshold, name=name, out_dir=out_dir, n_boot=n_boot)
    result.update(model=loaded.path, threshold=loaded.threshold, threshold_rule=loaded.threshold_rule,
                  unreadable={p: e for p, e in zip(paths, errors) if e})
    write_json(out_dir / f"metrics_{name}.json", result)
    write_predictions(out_dir / f"predictions_{name}.csv", [p for p, k in zip(paths, ok) if k], y, prob,
                      loaded.threshold)
    return result

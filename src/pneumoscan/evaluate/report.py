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
from pneumoscan.evaluate.multiclass import evaluate_multiclass, write_multiclass_predictions
from pneumoscan.run_folder import RunFolder, plot_file

log = logging.getLogger(__name__)


def evaluate_split(y_true, prob, *, threshold: float, name: str, out_dir: str | Path | None = None,
                   n_boot: int = 1000, seed: int = 0, names: tuple[str, ...] = CLASSES) -> dict:
    """Metrics at ``threshold`` and at 0.5, each with bootstrap 95% CIs; plots written to ``out_dir``."""
    y_true, prob = np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)
    result = {
        "at_threshold": binary_metrics(y_true, prob, threshold, names=names),
        "at_0.5": binary_metrics(y_true, prob, 0.5, names=names),
    }
    result["at_threshold"]["ci95"] = bootstrap_ci(y_true, prob, threshold, n_boot=n_boot, seed=seed)
    result["at_0.5"]["ci95"] = bootstrap_ci(y_true, prob, 0.5, n_boot=n_boot, seed=seed)
    if out_dir is not None:
        result["plots"] = write_plots(y_true, prob, threshold, name, Path(out_dir), names=names)
    m = result["at_threshold"]
    log.info("%s: AUC %.4f, accuracy %.4f, sensitivity %.4f, specificity %.4f at threshold %.4f",
             name, m["auc"], m["accuracy"], m["sensitivity"], m["specificity"], threshold)
    return result


def write_plots(y_true, prob, threshold: float, name: str, out_dir: Path,
                names: tuple[str, ...] = CLASSES) -> list[str]:
    """ROC (with both operating points), PR, confusion matrix, calibration and score histogram."""
    out_dir.mkdir(parents=True, exist_ok=True)
    at_t = binary_metrics(y_true, prob, threshold)
    at_half = binary_metrics(y_true, prob, 0.5)
    points = {f"threshold {threshold:.3f}": (1 - at_t["specificity"], at_t["sensitivity"]),
              "threshold 0.5": (1 - at_half["specificity"], at_half["sensitivity"])}
    written = [
        plots.plot_roc({f"{name} (AUC {at_t['auc']:.3f})": (y_true, prob)}, plot_file(out_dir, "roc", name),
                       points=points, title=f"ROC, {name}"),
        plots.plot_pr(y_true, prob, plot_file(out_dir, "pr", name), label=f"AP {at_t['average_precision']:.3f}",
                      title=f"Precision-recall, {name}"),
        plots.plot_confusion(at_t["confusion_matrix"], plot_file(out_dir, "confusion", name),
                             title=f"{name}, threshold {threshold:.3f}", names=names),
        plots.plot_calibration(y_true, prob, plot_file(out_dir, "calibration", name), title=f"Calibration, {name}",
                               names=names),
        plots.plot_score_histogram(y_true, prob, threshold, plot_file(out_dir, "scores", name),
                                   title=f"Scores, {name}", names=names),
    ]
    return [str(p.name) for p in written]


def write_predictions(path: str | Path, paths: list[str], y_true, prob, threshold: float,
                      flagged: list[bool] | None = None, names: tuple[str, ...] = CLASSES,
                      predicted: list[str] | None = None) -> None:
    """A CSV of ``path,label,probability,predicted,threshold[,flagged]`` rows; ``predicted``: the screenings'
    labels where images were screened (else the probability at the threshold, as a screening decides).

    Probabilities are written exactly (shortest round-trip form), not rounded: a confident model puts
    many test images within 1e-6 of 1, and rounding them to ties would change the AUC that
    ensembles and pair tests compute from this file.
    """
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "probability", "predicted", "threshold"] + (["flagged"] if flagged else []))
        for i, (p, y, s) in enumerate(zip(paths, y_true, prob)):
            label = predicted[i] if predicted is not None else names[int(s >= threshold)]
            row = [p, names[int(y)], repr(float(s)), label, f"{threshold:.6f}"]
            writer.writerow(row + ([int(flagged[i])] if flagged else []))


def read_predictions(path: str | Path, names: tuple[str, ...] = CLASSES) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(paths, labels 0/1, probabilities)`` from a CSV written by :func:`write_predictions`."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return ([r["path"] for r in rows], np.array([list(names).index(r["label"]) for r in rows]),
            np.array([float(r["probability"]) for r in rows]))


def read_called(path: str | Path, names: tuple[str, ...]) -> np.ndarray:
    """The class index each row of a predictions CSV was called (its ``predicted`` column: the decision)."""
    with Path(path).open(newline="") as handle:
        return np.array([list(names).index(row["predicted"]) for row in csv.DictReader(handle)])


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


def evaluate_screened(screener, samples, *, out_dir: str | Path, name: str, n_boot: int = 1000, seed: int = 0,
                      plots_dir: str | Path | None = None) -> dict:
    """Screen labelled ``samples`` as any user of the model would, and evaluate what was scored at the
    model's threshold (two classes) or its arg-max decision (more). Reports how many images were refused
    (not the modality, blank, colour), could not be read, or were scored but flagged as unlike the training
    population; writes ``metrics_<name>.json``, ``predictions_<name>.csv`` (scored images) and plots (into
    ``plots_dir``, default ``out_dir``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = screener.screen([s.path for s in samples], desc=name)
    scored = [(s, r) for s, r in zip(samples, results) if r.scored]
    for result in results:
        if not result.scored:
            log.warning("%s %s: %s", result.status, result.source, result.reason)
    if not scored:
        raise ValueError(f"{name}: no image was scored ({len(results)} refused or unreadable); nothing to evaluate")
    y = np.array([s.label for s, _ in scored])
    names = tuple(screener.classes)
    if len(names) > 2:
        prob = np.array([[r.probabilities[c] for c in names] for _, r in scored])
        result = evaluate_multiclass(y, prob, names, name=name, out_dir=plots_dir or out_dir, n_boot=n_boot,
                                     seed=seed)
    else:
        prob = np.array([r.probability for _, r in scored])
        result = evaluate_split(y, prob, threshold=screener.threshold, name=name, out_dir=plots_dir or out_dir,
                                n_boot=n_boot, seed=seed, names=names)
    result["screening"] = screening_counts(results)
    result["not_scored"] = {r.source: f"{r.status}: {r.reason}" for r in results if not r.scored}
    result["flagged"] = [r.source for r in results if r.flagged]
    write_json(RunFolder(out_dir).split_metrics(name), result)
    paths, flagged = [s.path for s, _ in scored], [r.flagged for _, r in scored]
    if len(names) > 2:
        write_multiclass_predictions(RunFolder(out_dir).predictions(name), paths, y, prob, names, flagged=flagged)
    else:
        write_predictions(RunFolder(out_dir).predictions(name), paths, y, prob, screener.threshold, flagged=flagged,
                          names=names, predicted=[r.label for _, r in scored])
    return result


def screening_counts(results) -> dict:
    """How many screenings were scored, flagged, refused and unreadable, with the fractions of all images."""
    n = len(results)
    from pneumoscan.inference.screen import REFUSED, UNREADABLE

    counts = {"images": n, "scored": sum(r.scored for r in results), "flagged": sum(r.flagged for r in results),
              "refused": sum(r.status == REFUSED for r in results),
              "unreadable": sum(r.status == UNREADABLE for r in results)}
    counts["refused_fraction"] = counts["refused"] / n if n else 0.0
    counts["flagged_fraction"] = counts["flagged"] / n if n else 0.0
    log.info("screened %d images: %d scored (%d flagged as unlike the training population), %d refused, "
             "%d unreadable", n, counts["scored"], counts["flagged"], counts["refused"], counts["unreadable"])
    return counts

"""Multi-class evaluation: per-class precision, recall, F1 and one-vs-rest ROC-AUC, macro and weighted
averages, balanced accuracy, the N x N confusion matrix, per-class ROC curves, bootstrap 95% CIs, and the
paired comparison of two models on the same images (McNemar on their errors, paired bootstrap of the
accuracy and macro-F1 differences). The decision is the most probable class."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from pneumoscan.evaluate import plots
from pneumoscan.evaluate.stats import mcnemar_test
from pneumoscan.run_folder import plot_file

log = logging.getLogger(__name__)

SUMMARY = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auc", "weighted_auc")


def _auc(y: np.ndarray, prob: np.ndarray, average: str) -> float:
    if len(np.unique(y)) < prob.shape[1]:
        return float("nan")
    return float(roc_auc_score(y, prob, multi_class="ovr", average=average, labels=list(range(prob.shape[1]))))


def summary_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """The metrics of ``SUMMARY`` for labels ``y`` [N] and class probabilities ``prob`` [N, K]."""
    predicted = prob.argmax(1)
    labels = list(range(prob.shape[1]))
    return {"accuracy": float(np.mean(predicted == y)),
            "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
            "macro_f1": float(f1_score(y, predicted, labels=labels, average="macro", zero_division=0)),
            "weighted_f1": float(f1_score(y, predicted, labels=labels, average="weighted", zero_division=0)),
            "macro_auc": _auc(y, prob, "macro"), "weighted_auc": _auc(y, prob, "weighted")}


def multiclass_metrics(y, prob, names: tuple[str, ...]) -> dict:
    """Summary metrics, per-class precision / recall / F1 / one-vs-rest AUC, and the confusion matrix."""
    y, prob = np.asarray(y).astype(int), np.asarray(prob, dtype=float)
    predicted = prob.argmax(1)
    report = classification_report(y, predicted, labels=list(range(len(names))), target_names=list(names),
                                   output_dict=True, zero_division=0)
    per_class = {name: {"precision": report[name]["precision"], "recall": report[name]["recall"],
                        "f1": report[name]["f1-score"], "support": int(report[name]["support"]),
                        "auc": float(roc_auc_score(y == k, prob[:, k])) if 0 < np.sum(y == k) < len(y)
                        else float("nan")}
                 for k, name in enumerate(names)}
    return {**summary_metrics(y, prob), "n": len(y), "per_class": per_class,
            "confusion_matrix": confusion_matrix(y, predicted, labels=list(range(len(names)))).tolist()}


def bootstrap_summary(y, prob, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals (resampling images) of the ``SUMMARY`` metrics."""
    y, prob = np.asarray(y).astype(int), np.asarray(prob, dtype=float)
    rng = np.random.default_rng(seed)
    draws = [summary_metrics(y[i], prob[i]) for i in rng.integers(0, len(y), size=(n_boot, len(y)))]
    tail = (1 - level) / 2 * 100
    return {k: [float(np.nanpercentile([d[k] for d in draws], tail)),
                float(np.nanpercentile([d[k] for d in draws], 100 - tail))] for k in SUMMARY}


def evaluate_multiclass(y, prob, names: tuple[str, ...], *, name: str, out_dir: str | Path | None = None,
                        n_boot: int = 1000, seed: int = 0) -> dict:
    """Metrics of the arg-max decision with bootstrap 95% CIs; the confusion matrix and per-class ROC
    curves written to ``out_dir``."""
    y, prob = np.asarray(y).astype(int), np.asarray(prob, dtype=float)
    result = {"classes": list(names), "at_argmax": multiclass_metrics(y, prob, names)}
    result["at_argmax"]["ci95"] = bootstrap_summary(y, prob, n_boot=n_boot, seed=seed)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        m = result["at_argmax"]
        curves = {f"{c} (AUC {m['per_class'][c]['auc']:.3f})": (y == k, prob[:, k]) for k, c in enumerate(names)}
        result["plots"] = [p.name for p in (
            plots.plot_confusion(m["confusion_matrix"], plot_file(out_dir, "confusion", name), title=name,
                                 names=names),
            plots.plot_roc(curves, plot_file(out_dir, "roc", name), title=f"ROC per class (one vs rest), {name}"))]
    m = result["at_argmax"]
    log.info("%s: accuracy %.4f, balanced accuracy %.4f, macro-F1 %.4f, macro AUC %.4f", name, m["accuracy"],
             m["balanced_accuracy"], m["macro_f1"], m["macro_auc"])
    return result


def paired_comparison(y, prob_a, prob_b, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Two models on the same images: McNemar's test of their errors and paired bootstrap intervals of
    the accuracy and macro-F1 differences (a minus b)."""
    y, prob_a, prob_b = np.asarray(y).astype(int), np.asarray(prob_a, float), np.asarray(prob_b, float)
    correct_a, correct_b = prob_a.argmax(1) == y, prob_b.argmax(1) == y
    rng = np.random.default_rng(seed)
    differences = {"accuracy": [], "macro_f1": []}
    labels = list(range(prob_a.shape[1]))
    for i in rng.integers(0, len(y), size=(n_boot, len(y))):
        differences["accuracy"].append(correct_a[i].mean() - correct_b[i].mean())
        differences["macro_f1"].append(
            f1_score(y[i], prob_a[i].argmax(1), labels=labels, average="macro", zero_division=0)
            - f1_score(y[i], prob_b[i].argmax(1), labels=labels, average="macro", zero_division=0))
    return {"mcnemar": mcnemar_test(y, prob_a.argmax(1), prob_b.argmax(1)),
            "accuracy_difference": float(correct_a.mean() - correct_b.mean()),
            **{f"{k}_difference_ci95": [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
               for k, v in differences.items()}}


def write_multiclass_predictions(path: str | Path, paths: list[str], y, prob, names: tuple[str, ...],
                                 flagged: list[bool] | None = None) -> None:
    """A CSV of ``path,label,predicted,<probability of each class>[,flagged]`` rows."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "predicted", *[f"probability_{n}" for n in names]]
                        + (["flagged"] if flagged else []))
        for i, (p, label, row) in enumerate(zip(paths, y, np.asarray(prob))):
            writer.writerow([p, names[int(label)], names[int(row.argmax())], *[repr(float(v)) for v in row]]
                            + ([int(flagged[i])] if flagged else []))


def read_multiclass_predictions(path: str | Path, names: tuple[str, ...]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(paths, class indices, probabilities [N, K])`` from a CSV written by ``write_multiclass_predictions``."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return ([r["path"] for r in rows], np.array([list(names).index(r["label"]) for r in rows], dtype=int),
            np.array([[float(r[f"probability_{n}"]) for n in names] for r in rows]).reshape(len(rows), len(names)))

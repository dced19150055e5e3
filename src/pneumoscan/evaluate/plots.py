"""Plots of an evaluation, as PNG files: ROC, PR, confusion matrix, calibration, training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.artist import setp
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from pneumoscan.data.labels import CLASSES


def subplots(rows: int = 1, columns: int = 1, *, figsize: tuple[float, float], **options):
    """(figure, axes) drawn without pyplot: no backend, no global state, safe in a server's threads."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, columns, **options)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, *,
             points: dict[str, tuple[float, float]] | None = None, title: str = "ROC") -> Path:
    """ROC curves of one or more models (``name -> (y_true, prob)``), with operating points."""
    fig, ax = subplots(figsize=(5, 5))
    for name, (y, p) in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    for name, (fpr, tpr) in (points or {}).items():
        ax.plot([fpr], [tpr], "o", label=name)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
           title=title, xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_pr(y, prob, path: Path, *, label: str, title: str = "Precision-recall") -> Path:
    precision, recall, _ = precision_recall_curve(y, prob)
    fig, ax = subplots(figsize=(5, 5))
    ax.plot(recall, precision, label=label)
    ax.axhline(np.mean(y), ls=":", color="grey", label="prevalence")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title=title, xlim=(0, 1.01), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_confusion(matrix, path: Path, *, title: str, names: tuple[str, ...] = CLASSES) -> Path:
    matrix = np.asarray(matrix)
    side = max(4.0, 1.1 * len(names) + 1.5)
    fig, ax = subplots(figsize=(side, side * 0.9))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black", fontsize=12)
    ticks = list(range(len(names)))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=names, yticklabels=names, xlabel="predicted", ylabel="true",
           title=title)
    if len(names) > 2:
        setp(ax.get_xticklabels(), rotation=30, ha="right")
    return _save(fig, path)


def plot_calibration(y, prob, path: Path, *, title: str = "Calibration", names: tuple[str, ...] = CLASSES) -> Path:
    frac_pos, mean_pred = calibration_curve(y, prob, n_bins=10, strategy="quantile")
    fig, ax = subplots(figsize=(5, 5))
    ax.plot(mean_pred, frac_pos, "o-", label="model")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability", ylabel=f"fraction {names[1]}", title=title)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_score_histogram(y, prob, threshold: float, path: Path, *, title: str,
                         names: tuple[str, ...] = CLASSES) -> Path:
    """Per-class histograms of the positive class's probability, with the decision threshold."""
    y, prob = np.asarray(y), np.asarray(prob)
    fig, ax = subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    for label, name in enumerate(names):
        ax.hist(prob[y == label], bins=bins, alpha=0.6, label=name)
    ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel=f"{names[1]} probability", ylabel="images", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_history(history: list[dict], path: Path) -> Path:
    """Loss, accuracy and ROC-AUC per epoch for train and validation, one colour per stage."""
    fig, axes = subplots(1, 3, figsize=(13, 3.6))
    stages = sorted({row["stage"] for row in history})
    for stage in stages:
        rows = [r for r in history if r["stage"] == stage]
        x = [r["global_epoch"] for r in rows]
        for ax, key in zip(axes, ("loss", "accuracy", "auc")):
            ax.plot(x, [r[f"train_{key}"] for r in rows], "-", label=f"{stage} train")
            ax.plot(x, [r[f"val_{key}"] for r in rows], "--", label=f"{stage} val")
    for ax, key in zip(axes, ("loss", "accuracy", "ROC-AUC")):
        ax.set(xlabel="epoch", title=key)
        ax.legend(fontsize=7)
    return _save(fig, path)

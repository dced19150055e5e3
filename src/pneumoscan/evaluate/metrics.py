"""Binary screening metrics, bootstrap confidence intervals and decision-threshold rules.

Labels are 0 = negative, 1 = positive class (``data.labels``: index 1 of a two-class task); scores are
positive-class probabilities. A case is called positive when its probability is >= the threshold.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, classification_report, roc_auc_score

from pneumoscan.data.labels import CLASSES

THRESHOLD_RULES = ("youden", "sensitivity", "fixed")
CI_METRICS = ("accuracy", "precision", "sensitivity", "specificity", "f1", "auc", "average_precision")


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp) for 0/1 arrays."""
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp = int(np.sum(y_true & y_pred))
    tn = int(np.sum(~y_true & ~y_pred))
    return tn, int(np.sum(~y_true & y_pred)), int(np.sum(y_true & ~y_pred)), tp


def _safe_div(num, den):
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def _rates(tn, fp, fn, tp) -> dict[str, np.ndarray]:
    """Accuracy, precision, sensitivity, specificity and F1 from (arrays of) confusion counts."""
    tn, fp, fn, tp = (np.asarray(v, dtype=float) for v in (tn, fp, fn, tp))
    precision = _safe_div(tp, tp + fp)
    sensitivity = _safe_div(tp, tp + fn)
    return {
        "accuracy": _safe_div(tp + tn, tp + tn + fp + fn),
        "precision": precision,
        "sensitivity": sensitivity,
        "specificity": _safe_div(tn, tn + fp),
        "f1": _safe_div(2 * precision * sensitivity, precision + sensitivity),
    }


def _ranking_metrics(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    if len(np.unique(y_true)) < 2:
        return {"auc": float("nan"), "average_precision": float("nan")}
    return {"auc": float(roc_auc_score(y_true, prob)),
            "average_precision": float(average_precision_score(y_true, prob))}


def binary_metrics(y_true, prob, threshold: float, *, names: tuple[str, ...] = CLASSES) -> dict:
    """Every metric at ``threshold``, plus the threshold-free AUC and average precision (the per-class report
    keyed by ``names``, negative class first)."""
    y_true, prob = np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)
    tn, fp, fn, tp = confusion_counts(y_true, prob >= threshold)
    metrics = {k: float(v) for k, v in _rates(tn, fp, fn, tp).items()}
    metrics["recall"] = metrics["sensitivity"]
    metrics.update(_ranking_metrics(y_true, prob))
    metrics.update(threshold=float(threshold), n=int(len(y_true)), n_positive=int(y_true.sum()),
                   confusion_matrix=[[tn, fp], [fn, tp]])
    metrics["classification_report"] = classification_report(
        y_true, (prob >= threshold).astype(int), labels=[0, 1], target_names=list(names),
        output_dict=True, zero_division=0)
    return metrics


def bootstrap_ci(y_true, prob, threshold: float, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals (resampling cases) for the metrics in ``CI_METRICS``."""
    y_true, prob = np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), size=(n_boot, len(y_true)))
    truth, called = y_true[idx].astype(bool), prob[idx] >= threshold
    counts = [np.sum(~truth & ~called, 1), np.sum(~truth & called, 1),
              np.sum(truth & ~called, 1), np.sum(truth & called, 1)]
    samples = _rates(*counts)
    ranking = [_ranking_metrics(y_true[i], prob[i]) for i in idx]
    samples["auc"] = np.array([r["auc"] for r in ranking])
    samples["average_precision"] = np.array([r["average_precision"] for r in ranking])
    tail = (1 - level) / 2 * 100
    return {name: [float(np.nanpercentile(samples[name], tail)), float(np.nanpercentile(samples[name], 100 - tail))]
            for name in CI_METRICS}


def _candidate_thresholds(prob: np.ndarray) -> np.ndarray:
    """Thresholds half-way (in logit space) between consecutive distinct scores, plus both ends."""
    scores = np.unique(np.clip(prob, 1e-7, 1 - 1e-7))
    logits = np.log(scores / (1 - scores))
    middles = (logits[1:] + logits[:-1]) / 2
    candidates = np.concatenate([[logits[0] - 1.0], middles, [logits[-1] + 1.0]])
    return 1 / (1 + np.exp(-candidates))


def choose_threshold(y_true, prob, *, rule: str = "youden", target_sensitivity: float = 0.95,
                     fixed: float = 0.5) -> float:
    """Pick the decision threshold on validation predictions.

    ``youden``: maximise sensitivity + specificity - 1; where a whole range of thresholds ties
    (well separated classes) take the middle of that range, in logit space, so the threshold keeps
    a margin to both classes. ``sensitivity``: the highest threshold whose sensitivity reaches
    ``target_sensitivity``. ``fixed``: ``fixed`` (0.5 is the literature's default).
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule {rule!r}: use one of {THRESHOLD_RULES}")
    if rule == "fixed":
        return float(fixed)
    y_true, prob = np.asarray(y_true).astype(bool), np.asarray(prob, dtype=float)
    if y_true.all() or not y_true.any():
        raise ValueError("choosing a threshold needs both classes in the validation set")
    candidates = _candidate_thresholds(prob)
    positives, negatives = np.sort(prob[y_true]), np.sort(prob[~y_true])
    # called = prob >= candidate: count scores below each candidate in the sorted scores of each class
    sensitivity = 1 - np.searchsorted(positives, candidates, side="left") / len(positives)
    specificity = np.searchsorted(negatives, candidates, side="left") / len(negatives)
    if rule == "sensitivity":
        return float(candidates[np.flatnonzero(sensitivity >= target_sensitivity).max()])
    youden = sensitivity + specificity - 1
    best = np.flatnonzero(np.isclose(youden, youden.max()))
    run = best[: np.argmax(np.diff(np.append(best, best[-1] + 2)) > 1) + 1]  # first contiguous plateau
    logit = np.log(candidates[run] / (1 - candidates[run]))
    return float(1 / (1 + np.exp(-(logit.min() + logit.max()) / 2)))


def threshold_interval(y_true, prob, groups, *, rule: str = "youden", target_sensitivity: float = 0.95,
                       n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the threshold that ``choose_threshold`` picks.

    ``groups`` (one per row: the patient) are resampled with replacement, each with all its rows, so
    a patient's images, and their shifted copies when the threshold is fitted on validation plus
    shifts, stay together. A wide interval says that another draw of validation patients would move
    the threshold, and the metrics at it, that far.
    """
    y_true, prob = np.asarray(y_true).astype(bool), np.asarray(prob, dtype=float)
    _, group_of_row = np.unique(np.asarray(groups), return_inverse=True)
    rows_of_group = np.split(np.argsort(group_of_row, kind="stable"), np.cumsum(np.bincount(group_of_row))[:-1])
    rng = np.random.default_rng(seed)
    thresholds = []
    for _ in range(n_boot):
        rows = np.concatenate([rows_of_group[g] for g in rng.integers(0, len(rows_of_group), len(rows_of_group))])
        if y_true[rows].all() or not y_true[rows].any():
            continue  # a draw with one class only has no threshold
        thresholds.append(choose_threshold(y_true[rows], prob[rows], rule=rule, target_sensitivity=target_sensitivity))
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(thresholds, tail)), float(np.percentile(thresholds, 100 - tail))]

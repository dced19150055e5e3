"""Paired tests for comparing two models on the same test images.

- ``delong_test``: DeLong et al. (1988) test of two correlated ROC-AUCs, with the fast
  mid-rank algorithm of Sun & Xu (2014).
- ``mcnemar_test``: exact McNemar test of two classifiers' errors at their thresholds.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _midranks(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def _structural_components(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and the DeLong placement values V10 (per positive) and V01 (per negative)."""
    positives, negatives = scores[y_true == 1], scores[y_true == 0]
    m, n = len(positives), len(negatives)
    all_ranks = _midranks(np.concatenate([positives, negatives]))
    v10 = (all_ranks[:m] - _midranks(positives)) / n
    v01 = 1.0 - (all_ranks[m:] - _midranks(negatives)) / m
    return float(v10.mean()), v10, v01


def delong_test(y_true, scores_a, scores_b) -> dict[str, float]:
    """Two-sided DeLong test that two models' AUCs on the same cases are equal."""
    y_true = np.asarray(y_true).astype(int)
    if len(np.unique(y_true)) != 2:
        raise ValueError("the DeLong test needs both classes")
    auc_a, v10_a, v01_a = _structural_components(y_true, np.asarray(scores_a, dtype=float))
    auc_b, v10_b, v01_b = _structural_components(y_true, np.asarray(scores_b, dtype=float))
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    covariance = s10 / len(v10_a) + s01 / len(v01_a)
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = auc_a - auc_b
    if variance <= 0:
        p_value = 1.0 if difference == 0 else 0.0
        z = 0.0 if difference == 0 else float("inf")
    else:
        z = difference / np.sqrt(variance)
        p_value = float(2 * stats.norm.sf(abs(z)))
    return {"auc_a": auc_a, "auc_b": auc_b, "difference": difference, "z": float(z), "p_value": p_value,
            "variance_a": float(covariance[0, 0]), "variance_b": float(covariance[1, 1])}


def mcnemar_test(y_true, predicted_a, predicted_b) -> dict[str, float]:
    """Exact two-sided McNemar test: do the two classifiers make different numbers of errors?"""
    y_true = np.asarray(y_true).astype(int)
    right_a = np.asarray(predicted_a).astype(int) == y_true
    right_b = np.asarray(predicted_b).astype(int) == y_true
    only_a = int(np.sum(right_a & ~right_b))   # a right, b wrong
    only_b = int(np.sum(~right_a & right_b))   # b right, a wrong
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    return {"a_right_b_wrong": only_a, "b_right_a_wrong": only_b, "p_value": p_value}

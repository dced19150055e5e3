"""Tests of pneumoscan.evaluate.stats: DeLong against a direct O(n^2) computation, McNemar by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from pneumoscan.evaluate.stats import delong_test, mcnemar_test


def naive_delong(y, a, b):
    """DeLong's variance straight from the definition: psi(x, y) over every positive-negative pair."""
    def placements(s):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)
    auc_a, v10a, v01a = placements(a)
    auc_b, v10b, v01b = placements(b)
    s10, s01 = np.cov([v10a, v10b]), np.cov([v01a, v01b])
    cov = s10 / len(v10a) + s01 / len(v01a)
    z = (auc_a - auc_b) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return auc_a, auc_b, 2 * stats.norm.sf(abs(z))


def test_delong_matches_the_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    a = np.round(y + rng.normal(0, 1.0, 300), 1)  # rounding makes ties
    b = np.round(y + rng.normal(0, 1.4, 300), 1)
    result = delong_test(y, a, b)
    auc_a, auc_b, p = naive_delong(y, a, b)
    assert result["auc_a"] == pytest.approx(auc_a) == pytest.approx(roc_auc_score(y, a))
    assert result["auc_b"] == pytest.approx(auc_b)
    assert result["p_value"] == pytest.approx(p, rel=1e-9)


def test_delong_identical_models_and_clear_difference():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    good = y + rng.normal(0, 0.5, 400)
    assert delong_test(y, good, good)["p_value"] == 1.0
    assert delong_test(y, good, rng.normal(0, 1, 400))["p_value"] < 1e-10


def test_mcnemar_exact_known_value():
    # 10 cases only a gets right, 2 only b: p = 2 * P(X <= 2 | n=12, 1/2) = 2 * 79 / 4096
    y = np.ones(20, int)
    a = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 3)
    b = np.array([0] * 10 + [1] * 2 + [1] * 5 + [0] * 3)
    result = mcnemar_test(y, a, b)
    assert (result["a_right_b_wrong"], result["b_right_a_wrong"]) == (10, 2)
    assert result["p_value"] == pytest.approx(2 * 79 / 4096)
    assert mcnemar_test(y, a, a)["p_value"] == 1.0

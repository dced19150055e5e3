"""Tests of pneumoscan.ood: the Mahalanobis detector and the blank-image rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumoscan.ood import OodDetector, fit_ood, is_blank


def test_threshold_is_the_validation_quantile_and_far_points_are_refused():
    rng = np.random.default_rng(0)
    train, val = rng.normal(0, 1, (2000, 16)), rng.normal(0, 1, (1000, 16))
    detector = fit_ood(train, val, quantile=0.99)
    scores = detector.score(val)
    assert np.mean(scores > detector.threshold) == pytest.approx(0.01, abs=0.002)
    assert (detector.score(rng.normal(4, 1, (50, 16))) > detector.threshold).all()
    assert np.mean(detector.score(rng.normal(0, 1, (500, 16))) > detector.threshold) < 0.05


def test_state_round_trip():
    detector = OodDetector(mean=torch.zeros(3), precision=torch.eye(3), threshold=2.0, quantile=0.995)
    again = OodDetector.from_state(detector.to_state())
    np.testing.assert_allclose(again.score(np.ones((2, 3))), [1.0, 1.0])
    assert again.threshold == 2.0


def test_blank_images():
    assert is_blank(np.full((32, 32), 0.5)) and not is_blank(np.random.default_rng(0).random((32, 32)))

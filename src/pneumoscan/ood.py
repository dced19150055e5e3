"""Refusing what is not a chest X-ray: a Mahalanobis distance on the model's pooled features.

Fitted on the training images' features (Ledoit-Wolf shrunk covariance), with the threshold at a
high quantile of the validation images' scores, so about ``1 - quantile`` of real X-rays like the
training data would be refused. Photos, documents, blank and noise images land far outside.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

log = logging.getLogger(__name__)

BLANK_STD = 0.01  # an image whose grey levels vary less than this is blank, whatever the model says


@dataclass
class OodDetector:
    """Squared Mahalanobis distance (divided by the feature count) and the threshold above which to refuse."""

    mean: torch.Tensor        # [C]
    precision: torch.Tensor   # [C, C]
    threshold: float
    quantile: float

    def score(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        centred = features - self.mean
        return (((centred @ self.precision) * centred).sum(dim=1) / features.shape[1]).numpy()

    def to_state(self) -> dict:
        return {"mean": self.mean, "precision": self.precision, "threshold": self.threshold, "quantile": self.quantile}

    @classmethod
    def from_state(cls, state: dict) -> OodDetector:
        return cls(mean=state["mean"].float(), precision=state["precision"].float(),
                   threshold=float(state["threshold"]), quantile=float(state["quantile"]))


def fit_ood(train_features: np.ndarray, val_features: np.ndarray, *, quantile: float = 0.995) -> OodDetector:
    """Fit the Gaussian on ``train_features``; set the threshold at ``quantile`` of the validation scores."""
    estimate = LedoitWolf().fit(np.asarray(train_features, dtype=np.float64))
    detector = OodDetector(mean=torch.as_tensor(estimate.location_, dtype=torch.float32),
                           precision=torch.as_tensor(estimate.precision_, dtype=torch.float32),
                           threshold=float("inf"), quantile=quantile)
    detector.threshold = float(np.quantile(detector.score(val_features), quantile))
    log.info("out-of-distribution threshold %.3f (%.1f%% quantile of validation scores)", detector.threshold,
             100 * quantile)
    return detector


def is_blank(gray: np.ndarray) -> bool:
    """Whether an image is (nearly) uniform: nothing to screen."""
    return float(np.std(gray)) < BLANK_STD

"""Is this a frontal chest film? The check that keeps lateral views (and anything else without a frontal pair of
lungs) from being scored as if they were frontal.

Two tests, both on what the lung segmenter computes anyway:

- **a pair of lungs side by side**: the smaller of the mask's two largest regions must hold at least
  ``smaller_share_limit`` of the lung area (a lateral film shows one lung field, or a sliver beside it);
- **lung fields like those of frontal films**: the squared Mahalanobis distance of the U-Net's bottleneck
  features (pooled to 2 x 2) from the training films', over the largest distance among the validation films
  (``novelty``: above 1 is unlike every frontal film the segmenter was validated on).

Both limits come from the segmenter's training and validation films (frontal films, children and adults);
lateral films are never used to set them. A white, consolidated lung is still a lung region: the segmenter
was trained on films with consolidation, and their masks count the white lung as lung.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pneumoscan.anatomy.regions import lung_regions

SHARE_MARGIN = 0.5  # the pair test accepts a smaller lung half as large (relative to the pair) as any validation film's


@dataclass(frozen=True)
class FrontalCheck:
    """The fitted limits of the frontal-film check."""

    mean: torch.Tensor              # [F] training films' bottleneck features
    precision: torch.Tensor         # [F, F] their (Ledoit-Wolf) precision matrix
    novelty_limit: float            # the largest validation film's squared distance
    smaller_share_limit: float      # SHARE_MARGIN x the smallest validation film's smaller-lung share
    fitted_on: dict = field(default_factory=dict)

    def to_state(self) -> dict:
        return {"mean": self.mean, "precision": self.precision, "novelty_limit": self.novelty_limit,
                "smaller_share_limit": self.smaller_share_limit, "fitted_on": self.fitted_on}

    @classmethod
    def from_state(cls, state: dict) -> FrontalCheck:
        return cls(**state)

    def limits(self) -> dict:
        """What a model description says about the check."""
        return {"smaller_share_limit": self.smaller_share_limit, "novelty_limit": 1.0,
                "fitted_on": self.fitted_on}


def bottleneck_features(segmenter, films: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The frontal check's features ``[N, F]`` of films already at the segmenter's side (uint8 ``[N, S, S]``)."""
    parts = []
    with torch.inference_mode():
        for start in range(0, len(films), batch_size):
            batch = torch.from_numpy(films[start:start + batch_size]).float()[:, None] / 255
            parts.append(segmenter.net.with_features(batch)[1].float().numpy())
    return np.concatenate(parts)


def smaller_shares(segmenter, films: np.ndarray) -> np.ndarray:
    """Each film's smaller-lung share (``regions.lung_regions``), films uint8 at the segmenter's side."""

    masks = segmenter.masks([film.astype(np.float32) / 255 for film in films])
    return np.array([lung_regions(mask).smaller_share for mask in masks])


def fit_frontal_check(segmenter, train: np.ndarray, val: np.ndarray, fitted_on: dict) -> FrontalCheck:
    """The check's limits from training and validation films (uint8 at the segmenter's side)."""
    from sklearn.covariance import LedoitWolf

    estimate = LedoitWolf().fit(bottleneck_features(segmenter, train))
    distances = estimate.mahalanobis(bottleneck_features(segmenter, val))
    return FrontalCheck(mean=torch.tensor(estimate.location_, dtype=torch.float32),
                        precision=torch.tensor(estimate.precision_, dtype=torch.float32),
                        novelty_limit=float(distances.max()),
                        smaller_share_limit=SHARE_MARGIN * float(smaller_shares(segmenter, val).min()),
                        fitted_on=fitted_on)


def frontal_refusal(smaller_share: float, novelty: float, limits: dict) -> str:
    """Why a film is not scored as a frontal chest film, or "" when it passes."""
    share_limit = limits["smaller_share_limit"]
    if smaller_share < share_limit:
        return (f"not a frontal chest X-ray: no pair of lungs side by side was found (the smaller lung region is "
                f"{smaller_share:.0%} of the lung area, under {share_limit:.0%}); lateral views are not scored")
    if novelty > limits["novelty_limit"]:
        return (f"not a frontal chest X-ray: its lung fields are unlike those of every frontal film the lung "
                f"segmenter was validated on (novelty {novelty:.2f} > 1); lateral views are not scored")
    return ""

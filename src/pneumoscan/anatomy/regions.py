"""What a lung mask looks like: the mask from a P(lung) map (cut at 0.5, its two largest regions: two lungs; a
consolidated lung is still a lung region), its share of the film and how large its second region is."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class LungRegions:
    """What a lung mask looks like: its share of the film, and its two largest regions' shares."""

    area_fraction: float
    regions: int                 # connected regions kept (at most two)
    smaller_share: float         # the smaller kept region's share of the lung area (0: one region)


def lung_mask(probability: np.ndarray) -> np.ndarray:
    """The lung mask (bool) of a P(lung) map: cut at 0.5, then its two largest regions."""
    return largest_regions(probability >= 0.5, 2)


def largest_regions(mask: np.ndarray, keep: int) -> np.ndarray:
    """``mask`` with only its ``keep`` largest connected regions."""
    labels, count = ndimage.label(mask)
    if count <= keep:
        return mask
    sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
    kept = 1 + np.argsort(sizes)[::-1][:keep]
    return np.isin(labels, kept)


def lung_regions(mask: np.ndarray) -> LungRegions:
    """The area and the regions of a lung mask."""
    labels, count = ndimage.label(mask)
    sizes = sorted(ndimage.sum(mask, labels, index=range(1, count + 1)), reverse=True) if count else []
    total = float(sum(sizes))
    smaller = float(sizes[1]) / total if len(sizes) >= 2 and total else 0.0
    return LungRegions(area_fraction=float(mask.mean()), regions=count, smaller_share=smaller)

"""How well lung masks match human ones: MONAI's Dice and 95th-percentile Hausdorff distance per film, with
the masks' "ignore" pixels (devices, markup) counted as neither lung nor background, and a bootstrap
interval of the mean Dice."""

from __future__ import annotations

import numpy as np
import torch

from pneumoscan.anatomy.masks import IGNORED


def film_scores(predicted: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per film: ``dice`` and ``hd95`` (pixels of the compared masks; inf where either mask is empty).
    ``truth`` holds 0 background, 1 lung, ``IGNORED``; ``predicted`` bool masks of the same sizes."""
    from monai.metrics import compute_dice, compute_hausdorff_distance

    dice, hd95 = [], []
    for pred, true in zip(predicted, truth):
        keep = true != IGNORED
        p = torch.from_numpy((pred & keep).astype(np.float32))[None, None]
        t = torch.from_numpy(((true == 1) & keep).astype(np.float32))[None, None]
        dice.append(float(compute_dice(p, t, include_background=True, ignore_empty=False)))
        if p.sum() and t.sum():
            hd95.append(float(compute_hausdorff_distance(p, t, include_background=True, percentile=95)))
        else:
            hd95.append(float("inf"))
    return {"dice": np.array(dice), "hd95": np.array(hd95)}


def summary(scores: dict[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean Dice with its bootstrap 95% interval over films, the worst film's, and the median HD95."""
    dice = scores["dice"]
    rng = np.random.default_rng(seed)
    means = [dice[rng.integers(0, len(dice), len(dice))].mean() for _ in range(n_boot)] if len(dice) else [np.nan]
    return {"films": int(len(dice)), "dice": float(dice.mean()) if len(dice) else float("nan"),
            "dice_ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "dice_min": float(dice.min()) if len(dice) else float("nan"),
            "dice_under_0.9": int((dice < 0.9).sum()),
            "hd95_median": float(np.median(scores["hd95"])) if len(dice) else float("nan"),
            "hd95_mean_finite": float(np.mean(scores["hd95"][np.isfinite(scores["hd95"])]))
            if np.isfinite(scores["hd95"]).any() else float("nan")}

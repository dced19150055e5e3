"""Robustness to acquisition shift, measured on validation images under ``data.shifts.SHIFTS``.

Reports, per shift, the ROC-AUC and the sensitivity and specificity at the model's threshold, so a
model and a threshold rule can be judged on how they transfer, without looking at the test split.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pneumoscan.cache import batched_logits, cached_activations
from pneumoscan.data.dataset import XRayDataset
from pneumoscan.data.records import Sample
from pneumoscan.data.shifts import SHIFTS
from pneumoscan.device import autocast_for
from pneumoscan.evaluate.metrics import binary_metrics
from pneumoscan.models.networks import ScreeningNet, TailAndHead


def shifted_logits(model: ScreeningNet, samples: list[Sample], *, shifts: tuple[str, ...] = tuple(SHIFTS),
                   cache_dir: str | None = None, precision: str = "bf16", device: torch.device | str = "cpu",
                   workers: int = 2, engine: str = "auto") -> np.ndarray:
    """Logits ``[len(samples), len(shifts)]`` (one logit) or ``[len(samples), len(shifts), K]`` (K class logits);
    the frozen trunk's outputs are cached when ``cache_dir``
    (computed by ``engine``, see ``cache.pick_engine``)."""
    device = torch.device(device)
    model = model.to(device).eval()
    if cache_dir and not isinstance(model.trunk, nn.Identity):
        acts = cached_activations(model.trunk, samples, model.preprocessing, shifts=shifts, cache_dir=cache_dir,
                                  precision=precision, device=device, workers=workers, engine=engine,
                                  desc="caching shifted views")
        logits = batched_logits(TailAndHead(model), acts, batch_size=128, precision=precision, device=device)
        return _per_image_and_shift(logits, len(samples), len(shifts))
    loader = DataLoader(XRayDataset(samples, model.preprocessing, shifts=shifts), batch_size=64, num_workers=workers)
    outputs = []
    with torch.inference_mode(), autocast_for(device, precision):
        for x, _, _ in loader:
            outputs.append(model(x.to(device)).float().cpu().numpy())
    return _per_image_and_shift(np.concatenate(outputs), len(samples), len(shifts))


def _per_image_and_shift(logits: np.ndarray, images: int, shifts: int) -> np.ndarray:
    """Rows ordered image by image, shift by shift, as ``[images, shifts]`` or ``[images, shifts, K]``."""
    return logits.reshape(images, shifts, *logits.shape[1:])


def robustness_report(y_true, logits: np.ndarray, threshold: float, shifts: tuple[str, ...]) -> dict:
    """Per-shift AUC, sensitivity and specificity at ``threshold``, and their mean and worst values."""
    y_true = np.asarray(y_true).astype(int)
    prob = 1 / (1 + np.exp(-logits.astype(np.float64)))
    per_shift = {}
    for k, name in enumerate(shifts):
        m = binary_metrics(y_true, prob[:, k], threshold)
        per_shift[name] = {key: m[key] for key in ("auc", "accuracy", "sensitivity", "specificity")}
    summary = {f"{stat}_{key}": float(fn([v[key] for v in per_shift.values()]))
               for key in ("auc", "accuracy", "sensitivity", "specificity")
               for stat, fn in (("mean", np.mean), ("worst", np.min))}
    return {"threshold": threshold, "shifts": per_shift, **summary}


def selection_summary(y_val, val_prob: np.ndarray, shift_y, shifted_prob: np.ndarray, threshold: float) -> dict:
    """The validation-only criterion that picks among models and threshold rules.

    Balanced accuracy (mean of sensitivity and specificity) at ``threshold`` on clean validation and on
    validation under every shift (the columns of ``shifted_prob``); its mean over these conditions is
    the criterion, its worst value the tie-breaker.
    """
    conditions = [binary_metrics(y_val, val_prob, threshold)] + [
        binary_metrics(shift_y, shifted_prob[:, k], threshold) for k in range(shifted_prob.shape[1])]
    balanced = [(m["sensitivity"] + m["specificity"]) / 2 for m in conditions]
    return {"clean_auc": conditions[0]["auc"],
            "mean_shifted_auc": float(np.mean([m["auc"] for m in conditions[1:]])),
            "mean_balanced_accuracy": float(np.mean(balanced)), "worst_balanced_accuracy": float(np.min(balanced)),
            "mean_specificity": float(np.mean([m["specificity"] for m in conditions])),
            "worst_specificity": float(np.min([m["specificity"] for m in conditions]))}


def pool_with_shifts(y_val, val_prob: np.ndarray, shift_y, shifted_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of clean validation followed by every shifted view, to fit a threshold on."""
    return (np.concatenate([np.asarray(y_val), np.repeat(np.asarray(shift_y), shifted_prob.shape[1])]),
            np.concatenate([np.asarray(val_prob), np.asarray(shifted_prob).ravel()]))


def pool_groups_with_shifts(val_groups, shift_groups, n_shifts: int) -> list:
    """The group (patient) of each row that ``pool_with_shifts`` returns, in its order: the clean
    validation images', then each shifted image's, once per shift."""
    return [*val_groups, *(group for group in shift_groups for _ in range(n_shifts))]

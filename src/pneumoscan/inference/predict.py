"""Batch prediction's output, and the raw network pass that training validates with.

``write_screenings_csv`` writes what ``screen.Screener`` said about each file (scored with its
probabilities and flag, refused with the reason, unreadable with the problem): the CSV of
``pneumoscan predict``. ``predict_logits`` runs a bare ``ScreeningNet`` over image files; training
uses it on validation images before the model and its input checks exist. Everything that screens
a finished model goes through ``screen.Screener`` instead.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pneumoscan.data.io import ImageLoadError, load_image
from pneumoscan.data.preprocess import Preprocessing
from pneumoscan.device import autocast_for

log = logging.getLogger(__name__)


def write_screenings_csv(path: str | Path, screenings, classes: tuple[str, ...], *, lungs: bool = False) -> None:
    """One row per file: ``path,status,label,probability,p_<CLASS>...,threshold,flagged,shift_score,
    modality_probability,reason,warning``, and with ``lungs`` (a model that draws them) ``lung_area_fraction,
    heat_in_lungs``; refused and unreadable rows have no probability."""
    anatomy = ["lung_area_fraction", "heat_in_lungs"] if lungs else []
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "status", "label", "probability", *[f"p_{c}" for c in classes], "threshold",
                         "flagged", "shift_score", "modality_probability", "reason", "warning", *anatomy])
        for s in screenings:
            writer.writerow([s.source, s.status, s.label, _number(s.probability),
                             *[_number(s.probabilities.get(c)) for c in classes], _number(s.threshold),
                             int(s.flagged) if s.scored else "", _number(s.shift_score),
                             _number(s.modality_probability), s.reason, s.warning,
                             *[_number(getattr(s, column)) for column in anatomy]])


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class _ImagesOrErrors(Dataset):
    """Network inputs for ``paths``; an unreadable file gives zeros and its error message."""

    def __init__(self, paths: list[str], preprocessing: Preprocessing):
        self.paths, self.preprocessing = paths, preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return self.preprocessing.to_tensor(load_image(self.paths[index])), ""
        except ImageLoadError as err:
            size = self.preprocessing.image_size
            return torch.zeros(self.preprocessing.channels, size, size), err.problem


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, paths: list[str], *, batch_size: int = 32, workers: int = 0,
                   precision: str = "bf16", device: torch.device | str = "cpu",
                   desc: str = "predicting") -> tuple[np.ndarray, list[str]]:
    """A bare model's logits for ``paths`` (NaN where unreadable) and each file's error ("" when fine)."""
    device = torch.device(device)
    model = model.to(device).eval()
    loader = DataLoader(_ImagesOrErrors(paths, model.preprocessing), batch_size=batch_size, num_workers=workers)
    logits, errors = [], []
    for images, batch_errors in tqdm(loader, desc=desc, unit="batch", leave=False):
        images = images.to(device)
        images = images.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, precision):
            out = model(images).float().cpu().numpy()
        out[np.array([bool(e) for e in batch_errors])] = np.nan
        logits.append(out)
        errors += list(batch_errors)
    return (np.concatenate(logits) if logits else np.zeros(0)), errors


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities ``[N, K]`` from logits ``[N, K]``."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)

"""Stage 6 of the pipeline: PNEUMONIA probabilities for many images, robust to broken files.

A file that cannot be read becomes a row with its error; the batch goes on.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pneumoscan.data.io import ImageLoadError, load_image
from pneumoscan.data.labels import CLASSES
from pneumoscan.data.preprocess import Preprocessing
from pneumoscan.data.records import find_images, read_label_csv
from pneumoscan.device import autocast_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    path: str
    probability: float | None  # None when the image could not be read
    threshold: float
    error: str = ""

    @property
    def label(self) -> str:
        if self.probability is None:
            return ""
        return CLASSES[int(self.probability >= self.threshold)]


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


def expand_inputs(inputs: list[str]) -> list[str]:
    """Image paths from files, folders (their images, recursively) and label CSVs."""
    paths: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += [str(p) for sub in sorted({path, *[d for d in path.rglob("*") if d.is_dir()]})
                      for p in find_images(sub)]
        elif path.suffix.lower() == ".csv":
            paths += [s.path for s in read_label_csv(path)]
        else:
            paths.append(str(path))
    return paths


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, paths: list[str], *, batch_size: int = 32, workers: int = 0,
                   precision: str = "bf16", device: torch.device | str = "cpu",
                   desc: str = "predicting") -> tuple[np.ndarray, list[str]]:
    """Logits for ``paths`` (NaN where unreadable) and the error message of each ("" when fine)."""
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


def predict_paths(model: torch.nn.Module, paths: list[str], *, threshold: float, **kwargs) -> list[Prediction]:
    """One ``Prediction`` per path, in order; broken files carry their error instead of a probability."""
    logits, errors = predict_logits(model, paths, **kwargs)
    probs = sigmoid(logits)
    return [Prediction(p, None if err else float(prob), threshold, err)
            for p, prob, err in zip(paths, probs, errors)]


def write_predictions_csv(path: str | Path, predictions: list[Prediction]) -> None:
    """``path,probability,label,threshold,error`` rows."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "probability", "label", "threshold", "error"])
        for p in predictions:
            prob = "" if p.probability is None else f"{p.probability:.6f}"
            writer.writerow([p.path, prob, p.label, f"{p.threshold:.6f}", p.error])

"""The human lung masks of ``shared/data/lung_masks``: which film each mask belongs to, the splits, and the
pixels (255 lung, 127 "ignore": devices and markup, neither lung nor background, 0 background).

Kermany masks overlay ``chest_xray_224`` files pixel for pixel; ieee8023 adult films come with their own
masks at their own size. Both are read squashed to a square of the segmenter's side (nearest neighbour for
masks), as ``chest_xray_224`` squashed the Kermany originals. Splits: Kermany's official ones, and the
dataset's suggested ieee8023 ``train``/``test`` by patient; validation is carved out of train by patient
(``validation_split``), so both test sets stay out of training and model choice.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pneumoscan.data.io import load_image
from pneumoscan.data.samples import patient_id

LUNG, IGNORE = 255, 127  # mask values; everything else is background
IGNORED = 2              # the ignore class in masks as read here (0 background, 1 lung)


@dataclass(frozen=True)
class LungFilm:
    """A film and its lung mask (``mask`` is "" for the lateral films, which have none)."""

    image: str
    mask: str
    source: str      # kermany or ieee8023
    split: str       # train, val, test (Kermany official; ieee8023 suggested), or lateral
    patient: str


def read_lung_films(root: str | Path) -> list[LungFilm]:
    """Every film of the lung-mask folder (its MANIFEST.csv), with absolute paths."""
    root = Path(root)
    manifest = root / "MANIFEST.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: not a lung-mask folder (expected MANIFEST.csv, as in "
                                f"shared/data/lung_masks)")
    films = []
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            image = (root / row["file"]).resolve()
            patient = row["patientid"] if row["source"] == "ieee8023" else patient_id(image.name)
            films.append(LungFilm(str(image), str(root / row["mask_files"]) if row["mask_files"] else "",
                                  row["source"], row["split"], f"{row['source']}:{patient}"))
    return films


def select(films: list[LungFilm], source: str, split: str) -> list[LungFilm]:
    return [f for f in films if f.source == source and f.split == split]


def validation_split(films: list[LungFilm], fraction: float, seed: int = 0) -> tuple[list[LungFilm], list[LungFilm]]:
    """(train, validation): whole patients drawn into validation by a hash of their id and the seed."""
    def drawn(patient: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest()
        return int(digest[:8], 16) / 0xFFFFFFFF < fraction
    return [f for f in films if not drawn(f.patient)], [f for f in films if drawn(f.patient)]


def read_mask(path: str | Path, size: int) -> np.ndarray:
    """A mask squashed to ``size`` x ``size`` (nearest neighbour): 0 background, 1 lung, ``IGNORED``."""
    values = np.asarray(Image.open(path).convert("L").resize((size, size), Image.NEAREST))
    mask = np.zeros(values.shape, np.uint8)
    mask[values == LUNG] = 1
    mask[values == IGNORE] = IGNORED
    return mask


def read_film(path: str | Path, size: int) -> np.ndarray:
    """A film as grey uint8, squashed to ``size`` x ``size``."""
    gray = load_image(path)
    image = Image.fromarray((np.clip(gray, 0, 1) * 255).round().astype(np.uint8))
    return np.asarray(image.resize((size, size), Image.BILINEAR))

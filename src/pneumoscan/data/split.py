"""A validation split carved out of train by patient (ids from ``data.samples.patient_id``): two
images of one patient never sit on both sides of a split.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from pneumoscan.data.labels import CLASSES
from pneumoscan.data.samples import Sample, patient_id

log = logging.getLogger(__name__)
__all__ = ["grouped_folds", "patient_id", "patient_split", "read_split", "write_split"]  # patient_id: its old home


def patient_split(samples: list[Sample], *, val_fraction: float = 0.15,
                  seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Split ``samples`` into (train, val), stratified by class and grouped by patient."""
    if not 0.0 < val_fraction < 0.5:
        raise ValueError(f"val_fraction={val_fraction}: use a value between 0 and 0.5, such as 0.15")
    n_folds = max(2, round(1.0 / val_fraction))
    train_idx, val_idx = grouped_folds([s.label for s in samples], [s.patient for s in samples], n_folds, seed)[0]
    train = [samples[i] for i in train_idx]
    val = [samples[i] for i in val_idx]
    check_patients_disjoint(train, val)
    return train, val


def grouped_folds(strata, groups, n_folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows), sorted, of each of ``n_folds`` folds: stratified by ``strata``, every
    row of a group (a patient, or a set of duplicate images) on one side."""
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(np.sort(train), np.sort(val))
            for train, val in folds.split(np.zeros(len(strata)), np.asarray(strata), np.asarray(groups))]


def check_patients_disjoint(first: list[Sample], second: list[Sample]) -> None:
    """Raise if any patient has images on both sides; log that the split is clean."""
    shared = {s.patient for s in first} & {s.patient for s in second}
    if shared:
        raise ValueError(f"{len(shared)} patient(s) sit in two splits, e.g. {sorted(shared)[:5]}")
    log.info("patient-level split checked: %d and %d patients, none shared",
             len({s.patient for s in first}), len({s.patient for s in second}))


def write_split(path: str | Path, splits: dict[str, list[Sample]]) -> None:
    """Write ``split,path,label,patient`` rows so a split can be reused."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "path", "label", "patient"])
        for name, samples in splits.items():
            writer.writerows([name, s.path, s.label, s.patient] for s in samples)


def read_split(path: str | Path) -> dict[str, list[Sample]]:
    """Read a split written by ``write_split``."""
    splits: dict[str, list[Sample]] = {}
    with Path(path).open(newline="") as handle:
        for row in csv.DictReader(handle):
            splits.setdefault(row["split"], []).append(Sample(row["path"], int(row["label"]), row["patient"]))
    return splits


def evenly_spaced(total: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``range(total)`` (all of them when count is 0 or larger)."""
    if count <= 0 or count >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, count).round().astype(int))


def describe_split(samples: list[Sample], names: tuple[str, ...] = CLASSES) -> str:
    """A one-line summary: images, patients (or duplicate groups) and images per class."""
    counts = Counter(s.label for s in samples)
    return (f"{len(samples)} images, {len({s.patient for s in samples})} patients, "
            + " / ".join(f"{name} {counts.get(i, 0)}" for i, name in enumerate(names)))

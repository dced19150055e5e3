"""Finding the labelled images of a dataset: the Kaggle folder layout or a ``path,label`` CSV.

A scan never dies on one bad file: ``find_unreadable`` decodes every image and returns the broken
ones with their reasons, so the caller can report and skip them.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from tqdm.auto import tqdm

from pneumoscan.data.io import ImageLoadError, load_image
from pneumoscan.data.labels import CLASSES, label_index
from pneumoscan.data.samples import Sample, patient_id

log = logging.getLogger(__name__)
__all__ = ["Sample", "class_counts", "expand_inputs", "find_images", "find_unreadable", "load_samples",
           "read_label_csv", "scan_kaggle_split"]

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}


def find_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def expand_inputs(inputs: list[str | Path]) -> list[str]:
    """Image paths from files, folders (their images, recursively, in sorted order) and CSVs with a
    ``path`` column (relative paths resolved against the CSV's folder; other columns ignored)."""
    paths: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            folders = sorted({path, *[d for d in path.rglob("*") if d.is_dir()]})
            paths += [str(p) for folder in folders for p in find_images(folder)]
        elif path.suffix.lower() == ".csv":
            paths += _csv_paths(path)
        else:
            paths.append(str(path))
    return paths


def _csv_paths(csv_path: Path) -> list[str]:
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no such CSV file")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if "path" not in (reader.fieldnames or []):
            raise ValueError(f"{csv_path}: no 'path' column; a list of images needs one")
        rows = [Path(row["path"]) for row in reader]
    return [str(p if p.is_absolute() else csv_path.parent / p) for p in rows]


def scan_kaggle_split(root: str | Path, split: str) -> list[Sample]:
    """The samples of ``ROOT/<split>/{NORMAL,PNEUMONIA}/*`` (the Kaggle chest-xray-pneumonia layout)."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: no such folder; expected ROOT/{split}/{{NORMAL,PNEUMONIA}}/")
    samples = []
    for label, class_name in enumerate(CLASSES):
        class_dir = split_dir / class_name
        if not class_dir.is_dir():
            raise FileNotFoundError(f"{class_dir}: no such folder; each split needs {list(CLASSES)}")
        samples += [Sample(str(p), label, patient_id(p.name)) for p in find_images(class_dir)]
    return samples


def read_label_csv(csv_path: str | Path) -> list[Sample]:
    """Samples from a CSV with columns ``path,label`` (and optionally ``patient``).

    Relative paths are resolved against the CSV's folder; labels may be names or 0/1.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no such CSV file")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; expected path,label[,patient]")
        samples = []
        for line, row in enumerate(reader, start=2):
            path = Path(row["path"])
            path = path if path.is_absolute() else csv_path.parent / path
            try:
                label = label_index(row["label"])
            except ValueError as err:
                raise ValueError(f"{csv_path}, line {line}: {err}") from err
            samples.append(Sample(str(path), label, row.get("patient") or patient_id(path.name)))
    return samples


def load_samples(source: str | Path, split: str | None = None) -> list[Sample]:
    """Samples from a Kaggle-layout folder (``split`` names the subfolder) or a label CSV."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return read_label_csv(source)
    if split is None:
        raise ValueError(f"{source}: a dataset folder needs a split name (train, val or test)")
    return scan_kaggle_split(source, split)


def find_unreadable(samples: list[Sample], *, desc: str = "checking images") -> dict[str, str]:
    """Decode every image; return ``{path: problem}`` for the ones that cannot be read."""
    broken = {}
    for sample in tqdm(samples, desc=desc, unit="img", leave=False):
        try:
            load_image(sample.path)
        except ImageLoadError as err:
            broken[sample.path] = err.problem
    for path, problem in broken.items():
        log.warning("skipping %s: %s", path, problem)
    return broken


def class_counts(samples: list[Sample]) -> dict[str, int]:
    """How many samples each class has, by class name."""
    return {name: sum(s.label == i for s in samples) for i, name in enumerate(CLASSES)}

"""Finding the labelled images of a dataset: a ``ROOT/<split>/<class>/`` tree or a ``path,label`` CSV.

A scan never dies on one bad file: ``find_unreadable`` decodes every image and returns the broken
ones with their reasons, so the caller can report and skip them.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from tqdm.auto import tqdm

from pneumoscan.data.io import ImageLoadError, load_image, looks_like_image
from pneumoscan.data.labels import CLASSES, ClassMap, class_map
from pneumoscan.data.samples import Sample, patient_id

log = logging.getLogger(__name__)
__all__ = ["Sample", "class_counts", "class_folders", "expand_inputs", "find_images", "find_unreadable",
           "load_samples", "read_label_csv", "scan_kaggle_split", "task_classes"]

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}


def find_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name: by suffix, else by content (``is_image_file``)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_file(p))


def is_image_file(path: Path) -> bool:
    """An image suffix (a broken file with one is listed, to be reported unreadable), or the first bytes of a
    DICOM file (``DICM`` after its 128-byte preamble) or of a JPEG, PNG, BMP or TIFF file."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return looks_like_image(head)


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


def class_folders(split_dir: str | Path) -> list[str]:
    """The class folders of one split of a ``ROOT/<split>/<class>/`` tree, by name."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: no such folder; expected ROOT/{split_dir.name}/<class>/ with images")
    folders = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise FileNotFoundError(f"{split_dir}: no class folders; expected {split_dir}/<class>/ with images")
    return folders


def scan_kaggle_split(root: str | Path, split: str, classes: ClassMap | None = None) -> list[Sample]:
    """The samples of ``ROOT/<split>/<class>/*``; ``classes`` maps the folders (default: one class per folder)."""
    split_dir = Path(root) / split
    folders = class_folders(split_dir)
    if classes is None and len(folders) < 2:
        raise FileNotFoundError(f"{split_dir}: only the class folder {folders}; a task needs one folder per class "
                                f"(the default task: {' and '.join(CLASSES)})")
    classes = classes or class_map(folders)
    samples = []
    for folder in folders:
        try:
            label = classes.index(folder)
        except ValueError:
            raise ValueError(f"{split_dir / folder}: not one of the classes {list(classes.names)}") from None
        samples += [Sample(str(p), label, patient_id(p.name)) for p in find_images(split_dir / folder)]
    return samples


def _csv_rows(csv_path: Path) -> list[dict]:
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no such CSV file")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; expected path,label[,patient]")
        return list(reader)


def read_label_csv(csv_path: str | Path, classes: ClassMap | None = None) -> list[Sample]:
    """Samples from a CSV with columns ``path,label`` (and optionally ``patient``).

    Relative paths are resolved against the CSV's folder; labels are class names or indices (default
    classes: the CSV's labels, sorted).
    """
    csv_path = Path(csv_path)
    rows = _csv_rows(csv_path)
    classes = classes or class_map([row["label"].strip() for row in rows])
    samples = []
    for line, row in enumerate(rows, start=2):
        path = Path(row["path"])
        path = path if path.is_absolute() else csv_path.parent / path
        try:
            label = classes.index(row["label"])
        except ValueError as err:
            raise ValueError(f"{csv_path}, line {line}: {err}") from err
        samples.append(Sample(str(path), label, row.get("patient") or patient_id(path.name)))
    return samples


def task_classes(source: str | Path, spec: str = "", split: str = "train") -> ClassMap:
    """The classes of a dataset: its ``split``'s class folders, or a CSV's labels, merged as ``spec`` says."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return class_map([row["label"].strip() for row in _csv_rows(source)], spec)
    return class_map(class_folders(source / split), spec)


def load_samples(source: str | Path, split: str | None = None, classes: ClassMap | None = None) -> list[Sample]:
    """Samples from a class-folder tree (``split`` names the subfolder) or a label CSV."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return read_label_csv(source, classes)
    if split is None:
        raise ValueError(f"{source}: a dataset folder needs a split name (train, val or test)")
    return scan_kaggle_split(source, split, classes)


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


def class_counts(samples: list[Sample], names: tuple[str, ...]) -> dict[str, int]:
    """How many samples each class has, by class name."""
    return {name: sum(s.label == i for s in samples) for i, name in enumerate(names)}

"""Synthetic chest-X-ray-like phantoms, for the demo, for tests and for localization checks.

A phantom has a body, two dark lung fields crossed by ribs, a bright spine and diaphragm, a corner
marker and noise. A PNEUMONIA phantom adds one or two bright opacities inside a lung, whose box is
known, so an explanation can be scored against where the evidence really is. Files are written in
the Kaggle layout with Kermany-style names, so the patient-level split applies to them too.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from pneumoscan.data.labels import CLASSES


def make_phantom(rng: np.random.Generator, *, pneumonia: bool, size: int = 224
                 ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """One phantom as a float32 ``size x size`` array in [0, 1], and its lesion boxes (x0, y0, x1, y1)."""
    image, boxes, _ = _phantom(rng, pneumonia, size)
    return image, boxes


def phantom_with_lungs(rng: np.random.Generator, *, pneumonia: bool = False, size: int = 224
                       ) -> tuple[np.ndarray, np.ndarray]:
    """A phantom and its lung mask (bool: inside either drawn lung field)."""
    image, _, lungs = _phantom(rng, pneumonia, size)
    return image, lungs


def phantom_films(count: int, *, size: int = 224, seed: int = 0) -> list[np.ndarray]:
    """``count`` phantoms of both kinds, as grey float arrays."""
    rng = np.random.default_rng(seed)
    return [make_phantom(rng, pneumonia=bool(i % 2), size=size)[0] for i in range(count)]


def _phantom(rng: np.random.Generator, pneumonia: bool, size: int):
    s = size / 224.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size / 2 + rng.normal(0, 4 * s), size / 2 + rng.normal(4 * s, 4 * s)
    image = np.full((size, size), 0.05, np.float32)
    image += 0.5 * _soft_ellipse(xx, yy, cx, cy, 96 * s, 108 * s, 6 * s)
    lungs = []
    for side in (-1, 1):
        lx, ly = cx + side * 42 * s, cy - 8 * s
        lung = _soft_ellipse(xx, yy, lx, ly, 32 * s * rng.uniform(0.9, 1.1), 66 * s * rng.uniform(0.9, 1.1), 4 * s)
        lungs.append((lx, ly, lung))
        image -= 0.32 * lung
        for k in range(-4, 5):
            rib_y = ly + k * 15 * s + 0.003 / s * (xx - cx) ** 2  # ribs curve down from the spine
            image += 0.10 * lung * np.exp(-((yy - rib_y) / (2.5 * s)) ** 2)
    image += 0.30 * np.exp(-((xx - cx) / (9 * s)) ** 2) * (yy > cy - 100 * s)  # spine and mediastinum
    image += 0.25 * (1 / (1 + np.exp(-(yy - (cy + 62 * s)) / (4 * s)))) * (image > 0.2)  # diaphragm
    boxes = []
    if pneumonia:
        for _ in range(rng.integers(1, 3)):
            lx, ly, lung = lungs[rng.integers(0, 2)]
            ox, oy = lx + rng.uniform(-15, 15) * s, ly + rng.uniform(-40, 40) * s
            sigma = rng.uniform(9, 16) * s
            texture = 1 + 0.3 * rng.standard_normal((size, size)).astype(np.float32)
            image += rng.uniform(0.28, 0.42) * np.exp(-((xx - ox) ** 2 + (yy - oy) ** 2) / (2 * sigma**2)) * texture
            r = 2 * sigma
            boxes.append(tuple(int(np.clip(v, 0, size - 1)) for v in (ox - r, oy - r, ox + r, oy + r)))
    marker_x = int(rng.uniform(8, 30) * s)
    image[int(12 * s):int(20 * s), marker_x:marker_x + int(6 * s)] = 0.9  # an "R" marker stand-in
    image = np.clip(image, 0, 1) ** rng.uniform(0.8, 1.25)
    image = image * rng.uniform(0.9, 1.1) + rng.normal(0, 0.02, image.shape)
    lung_mask = np.maximum(lungs[0][2], lungs[1][2]) > 0.5
    return np.clip(image, 0, 1).astype(np.float32), boxes, lung_mask


def _soft_ellipse(xx, yy, cx, cy, ax, ay, edge):
    r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    return 1 / (1 + np.exp((r - 1) * min(ax, ay) / edge))


def write_synthetic_dataset(root: str | Path, *, n_train: int = 240, n_test: int = 80, n_val: int = 8,
                            size: int = 224, pneumonia_share: float = 0.6, seed: int = 0) -> Path:
    """Write phantoms as ``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`` plus ``ROOT/lesions.csv``.

    About a fifth of the patients have two images, so the patient-level split has work to do.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    patient = 0
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        for folder in CLASSES:
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        made = 0
        while made < count:
            patient += 1
            pneumonia = bool(rng.random() < pneumonia_share)
            for image_no in range(1 + int(rng.random() < 0.2)):
                if made == count:
                    break
                image, boxes = make_phantom(rng, pneumonia=pneumonia, size=size)
                name = (f"person{patient}_bacteria_{patient * 3 + image_no}.jpeg" if pneumonia
                        else f"IM-{patient:04d}-{image_no + 1:04d}.jpeg")
                path = root / split / CLASSES[int(pneumonia)] / name
                Image.fromarray((image * 255).round().astype(np.uint8)).save(path, quality=92)
                rows += [[str(path.relative_to(root)), split, int(pneumonia), *box] for box in boxes]
                rows += [] if boxes else [[str(path.relative_to(root)), split, 0, "", "", "", ""]]
                made += 1
    with (root / "lesions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "split", "label", "x0", "y0", "x1", "y1"])
        writer.writerows(rows)
    return root


def write_lung_mask_folder(root: str | Path, *, n_train: int = 48, n_test: int = 8, size: int = 96,
                           seed: int = 0) -> Path:
    """Phantoms with their lung masks in the layout of ``shared/data/lung_masks`` (a MANIFEST.csv; 255 lung),
    as adult-source films of their own patients: a lung segmenter trains on it in seconds."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rows = []
    for i in range(n_train + n_test):
        image, lungs = phantom_with_lungs(rng, pneumonia=bool(i % 2), size=size)
        Image.fromarray((image * 255).round().astype(np.uint8)).save(root / "images" / f"film{i}.png")
        Image.fromarray((lungs * 255).astype(np.uint8)).save(root / "masks" / f"film{i}.png")
        rows.append({"source": "ieee8023", "split": "train" if i < n_train else "test", "file": f"images/film{i}.png",
                     "mask_files": f"masks/film{i}.png", "patientid": str(i)})
    with (root / "MANIFEST.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def read_lesion_boxes(root: str | Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """``{absolute image path: [boxes]}`` from a synthetic dataset's ``lesions.csv``."""
    root = Path(root)
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    with (root / "lesions.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            entry = boxes.setdefault(str(root / row["path"]), [])
            if row["x0"] != "":
                entry.append(tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1")))
    return boxes

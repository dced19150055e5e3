"""What a training run needs before its first epoch: the run folder with its settings and log, the
patient-level split (reused on resume), and the model those settings describe."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from pneumoscan import settings as settings_io
from pneumoscan.data.labels import ClassMap
from pneumoscan.data.preprocess import Preprocessing
from pneumoscan.data.records import Sample, find_unreadable, load_samples, task_classes
from pneumoscan.data.split import describe_split, patient_split, read_split, write_split
from pneumoscan.evaluate.report import write_json
from pneumoscan.models.networks import ScreeningNet, build_model
from pneumoscan.run_folder import RunFolder
from pneumoscan.train.config import TrainConfig

log = logging.getLogger(__name__)


def run_config(run_dir: str | Path) -> TrainConfig:
    """The settings a run was made with (a setting newer than the run takes today's default)."""
    return settings_io.from_dict(TrainConfig, json.loads(RunFolder(run_dir).config.read_text()))


def prepare_run_folder(folder: RunFolder, config: TrainConfig, resume: bool) -> None:
    """A new run writes its settings; a resume checks that they have not changed."""
    if resume:
        if not folder.config.exists():
            raise FileNotFoundError(f"{folder.root}: nothing to resume (no config.json); start without --resume")
        saved, asked = settings_io.to_dict(run_config(folder.root)), settings_io.to_dict(config)
        if saved != asked:
            changed = sorted(k for k, v in asked.items() if saved.get(k) != v)
            raise ValueError(f"{folder.root}: --resume needs the same settings; these differ: {changed}")
        return
    if folder.started():
        raise FileExistsError(f"{folder.root} already holds a run; pass --resume to continue it or choose "
                              "another --out")
    folder.root.mkdir(parents=True, exist_ok=True)
    folder.config.write_text(json.dumps(settings_io.to_dict(config), indent=2) + "\n")


def log_to_file(path: Path) -> logging.Handler:
    """Copy pneumoscan's INFO log to the run folder (whatever the console shows)."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("pneumoscan")
    package_logger.addHandler(handler)
    if package_logger.level == logging.NOTSET or package_logger.level > logging.INFO:
        package_logger.setLevel(logging.INFO)
    return handler


def run_classes(folder: RunFolder, config: TrainConfig) -> ClassMap:
    """The run's classes, kept in its folder: the training data's class folders (or CSV labels), merged as
    ``config.classes`` says."""
    if folder.classes.exists():
        saved = json.loads(folder.classes.read_text())
        return ClassMap(tuple(saved["names"]), saved["sources"])
    classes = (task_classes(config.data, config.classes, config.train_split) if config.data
               else class_map_of_split(config))
    folder.classes.write_text(json.dumps({"names": list(classes.names), "sources": classes.sources}, indent=2) + "\n")
    log.info("classes: %s", ", ".join(f"{i} = {name}" for i, name in enumerate(classes.names)))
    return classes


def class_map_of_split(config: TrainConfig) -> ClassMap:
    """A run given only a split file: its labels are indices; two of them are the default task."""
    from pneumoscan.data.labels import class_map

    labels = {s.label for samples in read_split(config.split).values() for s in samples}
    return class_map([str(i) for i in range(max(labels) + 1)], config.classes)


def load_split(config: TrainConfig, folder: RunFolder,
               classes: ClassMap) -> tuple[list[Sample], dict[str, list[Sample]]]:
    """(the readable train pool, {"train": ..., "val": ...}), reusing a saved split when there is one."""
    given = folder.split if folder.split.exists() else (Path(config.split) if config.split else None)
    if given is not None:
        splits = read_split(given)
        log.info("using split %s", given)
    else:
        source = load_samples(config.data, config.train_split if Path(config.data).is_dir() else None, classes)
        broken = find_unreadable(source, desc="checking train images")
        if broken:
            write_json(folder.unreadable, broken)
            log.warning("%d unreadable train images skipped (listed in %s)", len(broken), folder.unreadable.name)
        source = [s for s in source if s.path not in broken]
        if config.group_by == "duplicates":
            source = grouped_by_duplicates(source)
        train, val = patient_split(source, val_fraction=config.val_fraction, seed=config.seed)
        splits = {"train": train, "val": val}
    write_split(folder.split, splits)
    for name, samples in splits.items():
        log.info("%s split: %s", name, describe_split(samples, classes.names))
    return pool_of(splits), splits


def grouped_by_duplicates(samples: list[Sample]) -> list[Sample]:
    """The samples with each group of exact or near duplicates as one "patient", so the split keeps it whole."""
    from dataclasses import replace

    from pneumoscan.data.duplicates import duplicate_groups

    groups = duplicate_groups([s.path for s in samples])
    log.info("%d images in %d duplicate groups (%d groups of two or more)", len(samples), len(set(groups)),
             sum(n > 1 for n in np.bincount(groups)))
    return [replace(s, patient=f"group{g}") for s, g in zip(samples, groups)]


def pool_of(splits: dict[str, list[Sample]]) -> list[Sample]:
    """Train and validation images in one path order: the order of the activation cache's rows."""
    return sorted(splits["train"] + splits["val"], key=lambda s: s.path)


def labels_of(samples: list[Sample]) -> np.ndarray:
    return np.array([s.label for s in samples], dtype=np.float32)


def build(config: TrainConfig, classes: ClassMap) -> ScreeningNet:
    """The untrained model ``config`` describes (ImageNet weights where asked; the head seeded)."""
    preprocessing = Preprocessing(image_size=config.image_size, intensity=config.intensity)
    kwargs = {"weights": config.weights_argument(), "preprocessing": preprocessing, "head_hidden": config.head_hidden,
              "dropout_in": config.dropout_in, "dropout_hidden": config.dropout_hidden, "outputs": classes.outputs}
    if config.model != "baseline_cnn":
        kwargs["allow_partial_weights"] = config.allow_partial_weights
    torch.manual_seed(config.seed)  # the head's (and any random layer's) initial weights
    return build_model(config.model, lungs=config.lungs, segmenter=lung_segmenter_state(config), **kwargs)


def lung_segmenter_state(config: TrainConfig) -> dict | None:
    """The state of the lung segmenter ``config`` names (``anatomy.segmenter.segmenter_state``), or None."""
    if not config.segmenter:
        return None
    from pneumoscan.anatomy.segmenter import load_segmenter, segmenter_state

    return segmenter_state(load_segmenter(config.segmenter))


def trained_model(run_dir: str | Path) -> ScreeningNet:
    """The model of a run after its training stages (also a run stopped with ``finish=False``)."""
    config = run_config(run_dir)
    model = build(config, run_classes(RunFolder(run_dir), config))
    saved = torch.load(RunFolder(run_dir).progress, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    return model.eval()

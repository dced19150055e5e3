"""What a training run needs before its first epoch: the run folder with its settings and log, the
patient-level split (reused on resume), and the model those settings describe."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from pneumoscan import settings as settings_io
from pneumoscan.data.preprocess import Preprocessing
from pneumoscan.data.records import Sample, find_unreadable, load_samples
from pneumoscan.data.split import describe_split, patient_split, read_split, write_split
from pneumoscan.evaluate.report import write_json
from pneumoscan.models import PneumoniaNet, build_model
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


def load_split(config: TrainConfig, folder: RunFolder) -> tuple[list[Sample], dict[str, list[Sample]]]:
    """(the readable train pool, {"train": ..., "val": ...}), reusing a saved split when there is one."""
    given = folder.split if folder.split.exists() else (Path(config.split) if config.split else None)
    if given is not None:
        splits = read_split(given)
        log.info("using split %s", given)
    else:
        source = load_samples(config.data, "train" if Path(config.data).is_dir() else None)
        broken = find_unreadable(source, desc="checking train images")
        if broken:
            write_json(folder.unreadable, broken)
            log.warning("%d unreadable train images skipped (listed in %s)", len(broken), folder.unreadable.name)
        source = [s for s in source if s.path not in broken]
        train, val = patient_split(source, val_fraction=config.val_fraction, seed=config.seed)
        splits = {"train": train, "val": val}
    write_split(folder.split, splits)
    for name, samples in splits.items():
        log.info("%s split: %s", name, describe_split(samples))
    return pool_of(splits), splits


def pool_of(splits: dict[str, list[Sample]]) -> list[Sample]:
    """Train and validation images in one path order: the order of the activation cache's rows."""
    return sorted(splits["train"] + splits["val"], key=lambda s: s.path)


def labels_of(samples: list[Sample]) -> np.ndarray:
    return np.array([s.label for s in samples], dtype=np.float32)


def build(config: TrainConfig) -> PneumoniaNet:
    """The untrained model ``config`` describes (ImageNet weights where asked; the head seeded)."""
    preprocessing = Preprocessing(image_size=config.image_size, intensity=config.intensity)
    kwargs = {"weights": config.weights_argument(), "preprocessing": preprocessing, "head_hidden": config.head_hidden,
              "dropout_in": config.dropout_in, "dropout_hidden": config.dropout_hidden}
    if config.model != "baseline_cnn":
        kwargs["allow_partial_weights"] = config.allow_partial_weights
    torch.manual_seed(config.seed)  # the head's (and any random layer's) initial weights
    return build_model(config.model, **kwargs)


def trained_model(run_dir: str | Path) -> PneumoniaNet:
    """The model of a run after its training stages (also a run stopped with ``finish=False``)."""
    model = build(run_config(run_dir))
    saved = torch.load(RunFolder(run_dir).progress, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    return model.eval()

"""The layout of a training run's folder: every file a run writes, named once, for the code that writes
it and the code that reads it back (train, resume, evaluate, export, compare, tune, the demo)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.pt"


def plot_file(folder: str | Path, kind: str, split: str) -> Path:
    """Where evaluation puts a plot of one split: ``roc``, ``pr``, ``confusion``, ``calibration`` or ``scores``."""
    return Path(folder) / f"{kind}_{split}.png"


@dataclass(frozen=True)
class RunFolder:
    """The files of one run under ``root``."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        """The settings the run was made with (``train --config`` reads it back)."""
        return self.root / "config.json"

    @property
    def split(self) -> Path:
        """The patient-level train/validation split (reused on resume)."""
        return self.root / "split.csv"

    @property
    def classes(self) -> Path:
        """The task's class names and which folders or labels map to them."""
        return self.root / "classes.json"

    @property
    def unreadable(self) -> Path:
        """Training images that could not be read, with the reason."""
        return self.root / "unreadable_files.json"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def epoch_state(self) -> Path:
        """The running stage's last finished epoch (weights, optimizer, schedule), for a resume."""
        return self.root / "train_state.pt"

    @property
    def progress(self) -> Path:
        """The stages done so far, the weights after the last one, the history and timings."""
        return self.root / "progress.pt"

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def curves(self) -> Path:
        return self.root / "training_curves.png"

    @property
    def model(self) -> Path:
        """The finished model: weights, threshold, preprocessing, classes, input checks."""
        return self.root / MODEL_FILE

    @property
    def segmenter(self) -> Path:
        """A lung segmentation run's model (``anatomy``): weights and what they were trained on."""
        return self.root / "segmenter.pt"

    @property
    def metrics(self) -> Path:
        """The run's summary; written last, so its presence means the run finished."""
        return self.root / "metrics.json"

    @property
    def input_checks(self) -> Path:
        """What the input checks were fitted on."""
        return self.root / "input_checks.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def plot(self, kind: str, split: str) -> Path:
        return plot_file(self.plots, kind, split)

    def predictions(self, split: str) -> Path:
        return self.root / f"predictions_{split}.csv"

    def split_metrics(self, split: str) -> Path:
        return self.root / f"metrics_{split}.json"

    @property
    def shifted_predictions(self) -> Path:
        """Validation predictions under the acquisition shifts of ``data.shifts``."""
        return self.root / "predictions_val_shifted.npz"

    def finished(self) -> bool:
        return self.metrics.exists()

    def started(self) -> bool:
        return self.epoch_state.exists() or self.model.exists()

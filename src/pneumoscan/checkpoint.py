"""Self-describing model checkpoints: weights plus everything needed to rebuild and use them.

A checkpoint holds the architecture name and arguments, the preprocessing, the class names, the
decision threshold (and how it was chosen), the input checks, metrics and the training settings,
next to the state dict. It contains only tensors and plain Python values, so ``torch.load(weights_only=True)`` reads
it without unpickling arbitrary objects. Files are written atomically.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pneumoscan.data.labels import PNEUMONIA_TASK, ClassMap
from pneumoscan.data.preprocess import Preprocessing
from pneumoscan.input_checks import InputChecks, PopulationShift
from pneumoscan.models import PneumoniaNet, build_model
from pneumoscan.run_folder import MODEL_FILE

FORMAT = "pneumoscan-model/1"


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with the threshold and metadata saved beside it."""

    model: PneumoniaNet
    threshold: float
    threshold_rule: str = "fixed"
    metrics: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    path: str = ""
    checks: InputChecks | None = None
    classes: ClassMap = PNEUMONIA_TASK

    @property
    def preprocessing(self) -> Preprocessing:
        return self.model.preprocessing


def atomic_save(payload, path: str | Path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves half a checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def save_model(path: str | Path, model: PneumoniaNet, *, threshold: float, threshold_rule: str,
               metrics: dict | None = None, settings: dict | None = None, checks: InputChecks | None = None,
               classes: ClassMap = PNEUMONIA_TASK) -> None:
    """Write ``model`` and what it needs to be used as one weights-only file (``threshold`` is used only
    with two classes; more are decided by the most probable class)."""
    from pneumoscan import __version__

    atomic_save({
        "format": FORMAT,
        "pneumoscan_version": __version__,
        "arch": model.arch,
        "arch_kwargs": model.arch_kwargs,
        "preprocessing": model.preprocessing.to_dict(),
        "classes": list(classes.names),
        "class_sources": classes.sources,
        "threshold": float(threshold),
        "threshold_rule": threshold_rule,
        "metrics": metrics or {},
        "settings": settings or {},
        "input_checks": checks.to_state() if checks else None,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }, path)


def resolve_model_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder holding ``model.pt``."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file; give a run folder or its {MODEL_FILE}")
    return path


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model saved by ``save_model`` (in eval mode) from a file or run folder."""
    path = resolve_model_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a pneumoscan model ({type(err).__name__} reading it as a checkpoint); give a "
                         f"run folder, its {MODEL_FILE}, an exported .onnx or an OpenVINO .xml") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pneumoscan model file (expected format {FORMAT})")
    classes = ClassMap(tuple(payload["classes"]), payload.get("class_sources") or {})
    if model_outputs(payload) != classes.outputs:
        raise ValueError(f"{path}: the head has {model_outputs(payload)} outputs for classes {list(classes.names)}")
    preprocessing = Preprocessing.from_dict(payload["preprocessing"])
    model = build_model(payload["arch"], **payload["arch_kwargs"], preprocessing=preprocessing)
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return LoadedModel(model=model, threshold=payload["threshold"], threshold_rule=payload["threshold_rule"],
                       metrics=payload["metrics"], settings=payload["settings"], path=str(path),
                       checks=_read_checks(payload), classes=classes)


def model_outputs(payload: dict) -> int:
    """How many logits a saved model's head has (its last layer's bias)."""
    return int(payload["state_dict"]["head.6.bias"].shape[0])


def _read_checks(payload: dict) -> InputChecks | None:
    """The input checks; a model saved before the modality gate existed has its shift score only."""
    if payload.get("input_checks"):
        return InputChecks.from_state(payload["input_checks"])
    if payload.get("ood"):
        old = payload["ood"]
        return InputChecks(shift=PopulationShift(mean=old["mean"].float(), precision=old["precision"].float(),
                                                 threshold=float(old["threshold"]), quantile=float(old["quantile"])),
                           gate=None)
    return None


def replace_checks(path: str | Path, checks: InputChecks) -> None:
    """Give a saved model new input checks (the weights, threshold and everything else stay)."""
    path = resolve_model_path(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload.pop("ood", None)
    payload["input_checks"] = checks.to_state()
    atomic_save(payload, path)

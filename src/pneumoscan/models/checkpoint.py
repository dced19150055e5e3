"""Self-describing model checkpoints: weights plus everything needed to rebuild and use them.

A checkpoint holds the model's description (``model_description``: architecture and arguments,
preprocessing, classes, threshold, words, checks, metrics), the fitted input checks and the training
settings, next to the state dict. It contains only tensors and plain Python values, so
``torch.load(weights_only=True)`` reads it without unpickling arbitrary objects. Files are written atomically.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from pneumoscan.data.labels import DEFAULT_TASK, ClassMap
from pneumoscan.data.preprocess import Preprocessing
from pneumoscan.data.tasks import TaskSettings
from pneumoscan.input_checks.checks import InputChecks
from pneumoscan.models.description import ModelDescription, check_limits, describe, task_words
from pneumoscan.models.networks import ScreeningNet, build_model
from pneumoscan.run_folder import MODEL_FILE
from pneumoscan.storage import atomic_save

FORMAT = "pneumoscan-model/2"
FORMAT_1 = "pneumoscan-model/1"  # before the description: the same facts as loose keys


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with its description (threshold, classes, words) and input checks."""

    model: ScreeningNet
    description: ModelDescription
    checks: InputChecks | None = None
    settings: dict = field(default_factory=dict)
    path: str = ""
    anatomy: dict | None = None  # a lung segmenter's state (anatomy.segmenter.segmenter_state), kept as saved

    @classmethod
    def of(cls, model: ScreeningNet, *, threshold: float = 0.5, threshold_rule: str = "fixed",
           classes: ClassMap = DEFAULT_TASK, checks: InputChecks | None = None, path: str = "",
           **described) -> LoadedModel:
        """A model in hand (not read from a file) with a description built from what is given."""
        description = describe(arch=model.arch, arch_kwargs=model.arch_kwargs,
                               preprocessing=model.preprocessing.to_dict(), classes=classes, threshold=threshold,
                               threshold_rule=threshold_rule, words=task_words(classes), checks=checks, **described)
        return cls(model=model, description=description, checks=checks, path=path)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.model.preprocessing

    @property
    def threshold(self) -> float:
        return self.description.threshold

    @property
    def threshold_rule(self) -> str:
        return self.description.threshold_rule

    @property
    def classes(self) -> ClassMap:
        return self.description.class_map


def save_model(path: str | Path, model: ScreeningNet, description: ModelDescription, *,
               settings: dict | None = None, checks: InputChecks | None = None, anatomy: dict | None = None) -> None:
    """Write ``model``, its description, input checks, training settings and lung segmenter (when screening
    draws the lungs) as one weights-only file."""
    atomic_save({
        "format": FORMAT,
        "description": description.to_dict(),
        "settings": settings or {},
        "input_checks": checks.to_state() if checks else None,
        "anatomy": anatomy,
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
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, FORMAT_1):
        raise ValueError(f"{path}: not a pneumoscan model file (expected format {FORMAT})")
    checks = InputChecks.from_state(payload["input_checks"]) if payload.get("input_checks") else None
    description = (ModelDescription.from_dict(payload["description"]) if payload["format"] == FORMAT
                   else _format_1_description(payload, checks))
    classes = description.class_map
    if model_outputs(payload) != classes.outputs:
        raise ValueError(f"{path}: the head has {model_outputs(payload)} outputs for classes {list(classes.names)}")
    preprocessing = Preprocessing.from_dict(description.preprocessing)
    model = build_model(description.arch, **description.arch_kwargs, preprocessing=preprocessing,
                        segmenter=payload.get("anatomy"))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return LoadedModel(model=model, description=description, checks=checks, settings=payload["settings"],
                       path=str(path), anatomy=payload.get("anatomy"))


def model_outputs(payload: dict) -> int:
    """How many logits a saved model's head has (its last layer's bias)."""
    return int(payload["state_dict"]["head.6.bias"].shape[0])


def _format_1_description(payload: dict, checks: InputChecks | None) -> ModelDescription:
    """The description of a model saved before descriptions existed, from its loose keys and the words its
    checks and settings kept."""
    classes = ClassMap(tuple(payload["classes"]), payload.get("class_sources") or {})
    state = payload.get("input_checks") or {}
    kept = TaskSettings(modality=state.get("modality", ""), population=state.get("population", ""))
    return describe(arch=payload["arch"], arch_kwargs=payload["arch_kwargs"], preprocessing=payload["preprocessing"],
                    classes=classes, threshold=payload["threshold"], threshold_rule=payload["threshold_rule"],
                    words=task_words(classes, payload["settings"].get("data", ""), kept), checks=checks,
                    training=training_facts(payload["settings"]))


def training_facts(settings: dict) -> dict:
    """What a description says about how the model was trained (from the run's settings)."""
    keys = ("recipe", "data", "model", "weights", "stages", "seed", "group_by", "image_size")
    return {k: settings[k] for k in keys if k in settings}


def replace_checks(path: str | Path, checks: InputChecks, fitted_on: dict | None = None) -> None:
    """Give a saved model new input checks, fitted on ``fitted_on`` (default: what the old ones were fitted on);
    the weights, threshold and the rest of the description stay."""
    loaded = load_model(path)
    fitted_on = fitted_on if fitted_on is not None else (loaded.description.input_checks or {}).get("fitted_on", {})
    save_model(loaded.path, loaded.model, replace(loaded.description, input_checks=check_limits(checks) |
                                                  {"fitted_on": fitted_on}), settings=loaded.settings, checks=checks,
               anatomy=loaded.anatomy)


def redescribe(path: str | Path, **changes) -> ModelDescription:
    """Change words of a saved model's description (``population="adults from ..."``); nothing else changes."""
    loaded = load_model(path)
    description = replace(loaded.description, **changes)
    save_model(loaded.path, loaded.model, description, settings=loaded.settings, checks=loaded.checks,
               anatomy=loaded.anatomy)
    return description


def replace_anatomy(path: str | Path, anatomy: dict | None, described: dict | None) -> None:
    """Give a saved model a lung segmenter's state (``None``: take it away) and the description's words for it;
    the weights, checks and the rest of the description stay. A model trained on the lung field alone
    (``lungs=crop|mask``) keeps the segmenter it was trained with."""
    loaded = load_model(path)
    lungs = loaded.description.arch_kwargs.get("lungs", "none")
    if lungs != "none":
        raise ValueError(f"{loaded.path}: this model sees only the lung field its own segmenter finds (lungs={lungs}); "
                         f"its segmenter cannot be replaced or removed, train a new model instead")
    save_model(loaded.path, loaded.model, replace(loaded.description, anatomy=described), settings=loaded.settings,
               checks=loaded.checks, anatomy=anatomy)


def attach_segmenter(model: str | Path, segmenter: str | Path) -> dict:
    """Give the classifier saved at ``model`` the segmenter at ``segmenter``; returns the description's words
    for it."""
    from pneumoscan.anatomy.segmenter import described, load_segmenter, segmenter_state

    loaded = load_segmenter(segmenter)
    words = described(loaded)
    replace_anatomy(model, segmenter_state(loaded), words)
    return words

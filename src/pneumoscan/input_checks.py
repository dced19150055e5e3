"""The two input checks that travel inside every model, with two different answers.

- *Not the model's modality* (for the pneumonia models: not a chest X-ray; a photo, document,
  screenshot, noise, another modality, a blank or a colour image): **refused**, never scored. Two
  rules run on the decoded file (blank: grey levels that barely vary; colour: a colourful file, since
  X-rays are grey), and ``ModalityGate`` learns the rest: a logistic regression on the model's pooled
  features, fitted with the training images and any other examples of the modality (other hospitals,
  adults, other devices) as positives, and made non-X-ray images (``data.not_xray``) and any examples
  of other modalities as negatives. Fitting on the training images alone cannot tell "another
  hospital" from "not an X-ray"; examples of both sides can.
- *The modality, but unlike the training population* (adult films, another scanner or hospital):
  **scored and flagged**. ``PopulationShift`` is the squared Mahalanobis distance of pooled features
  from the training images' (Ledoit-Wolf covariance, divided by the feature count); images above a
  high quantile of the validation images' scores are flagged. It reads the frozen trunk's pooled
  output where the model has one (generic ImageNet features keep what sets one population of films
  apart, which fine-tuning teaches the last block to ignore: on the Kermany DenseNet121, at 0.5% of
  validation flagged, 90% of held-in adult films against 45% with the last layer), else the last
  feature map. The Gaussian is fitted on the training images and resampled copies of some of them
  (blur, half resolution, sharpening, JPEG): how a film was resized or compressed does not make it
  another population (without them, half of the resampled validation images were flagged; with
  them 1%, and 93% of held-in adult films).

Both read features the model computes anyway, so checking costs two small matrix products.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression

from pneumoscan.data.io import ImageLoadError, load_image
from pneumoscan.data.not_xray import made_images
from pneumoscan.data.records import expand_inputs
from pneumoscan.data.split import evenly_spaced

log = logging.getLogger(__name__)

BLANK_STD = 0.01       # grey levels varying less than this: blank, nothing to screen
COLOUR_LIMIT = 12.0    # colourfulness above this: a colour image (grey and faintly tinted files are under it)
GATE_THRESHOLD = 0.5   # refuse when the gate's probability of the modality is below this
RESAMPLINGS = ("blur_1", "lowres_0.5", "sharpen", "jpeg_15")  # data.shifts that change no population


@dataclass(frozen=True)
class InputCheckSettings:
    """How a run fits its input checks (part of the training settings)."""

    modality: str = "chest X-ray"      # what the model screens; a refusal says "not a <modality>"
    population: str = ""               # who the training images are, for the shift warning ("" = the training data)
    accept: tuple[str, ...] = ()       # more images of the modality (folders or CSVs with a path column):
                                       # other hospitals, ages, devices; never refused for being unlike training
    refuse: tuple[str, ...] = ()       # images of other modalities or body parts (folders or path CSVs)
    examples_per_source: int = 600     # at most this many images are read from each accept/refuse source
    made_per_kind: int = 80            # made non-X-ray images of each kind of data.not_xray.KINDS
    exposure_examples: int = 200       # training images also given over- and under-exposed, as positives
    resampled_examples: int = 500      # training images also resampled (RESAMPLINGS) for the shift score's Gaussian
    flag_quantile: float = 0.995       # flag images whose shift score is above this quantile of validation's

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class PopulationShift:
    """Squared Mahalanobis distance (divided by the feature count) and the score above which to flag."""

    mean: torch.Tensor        # [C]
    precision: torch.Tensor   # [C, C]
    threshold: float
    quantile: float

    def score(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        centred = features - self.mean
        return (((centred @ self.precision) * centred).sum(dim=1) / features.shape[1]).numpy()


@dataclass
class ModalityGate:
    """P(modality) = sigmoid(features @ weight + bias), on raw pooled features (the scaling is folded in)."""

    weight: torch.Tensor      # [C]
    bias: float
    threshold: float = GATE_THRESHOLD

    def probability(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        return torch.sigmoid(features @ self.weight + self.bias).numpy()


SHIFT_LAYERS = ("trunk", "last")  # where the shift score's features are pooled from


@dataclass
class InputChecks:
    """What a model knows about its inputs: the gate, the shift score and the words to report them in."""

    shift: PopulationShift
    gate: ModalityGate | None
    modality: str = "chest X-ray"
    population: str = "the training images"
    shift_layer: str = "last"          # "trunk": the frozen trunk's pooled output; "last": the last feature map

    def to_state(self) -> dict:
        return {"shift": {"mean": self.shift.mean, "precision": self.shift.precision,
                          "threshold": self.shift.threshold, "quantile": self.shift.quantile},
                "gate": {"weight": self.gate.weight, "bias": self.gate.bias, "threshold": self.gate.threshold}
                if self.gate else None,
                "modality": self.modality, "population": self.population, "shift_layer": self.shift_layer}

    @classmethod
    def from_state(cls, state: dict) -> InputChecks:
        shift = state["shift"]
        gate = state.get("gate")
        return cls(shift=PopulationShift(mean=shift["mean"].float(), precision=shift["precision"].float(),
                                         threshold=float(shift["threshold"]), quantile=float(shift["quantile"])),
                   gate=ModalityGate(weight=gate["weight"].float(), bias=float(gate["bias"]),
                                     threshold=float(gate["threshold"])) if gate else None,
                   modality=state.get("modality", "chest X-ray"),
                   population=state.get("population", "the training images"),
                   shift_layer=state.get("shift_layer", "last"))


def is_blank(gray: np.ndarray) -> bool:
    """Whether an image is (nearly) uniform: nothing to screen."""
    return float(np.std(gray)) < BLANK_STD


def rule_refusal(gray: np.ndarray, colour: float, modality: str) -> str:
    """Why a decoded file is refused before the network sees it ("" when it passes)."""
    if is_blank(gray):
        return "the image is blank (uniform grey levels); nothing to screen"
    if colour > COLOUR_LIMIT:
        return f"a colour image (colourfulness {colour:.0f} > {COLOUR_LIMIT:.0f}), not a {modality}"
    return ""


def fit_shift(train_features: np.ndarray, val_features: np.ndarray, *, quantile: float = 0.995) -> PopulationShift:
    """Fit the Gaussian on ``train_features``; flag above ``quantile`` of the validation scores."""
    estimate = LedoitWolf().fit(np.asarray(train_features, dtype=np.float64))
    shift = PopulationShift(mean=torch.as_tensor(estimate.location_, dtype=torch.float32),
                            precision=torch.as_tensor(estimate.precision_, dtype=torch.float32),
                            threshold=float("inf"), quantile=quantile)
    shift.threshold = float(np.quantile(shift.score(val_features), quantile))
    log.info("population-shift flag above %.3f (%.1f%% quantile of validation scores)", shift.threshold,
             100 * quantile)
    return shift


def fit_gate(positive: np.ndarray, negative: np.ndarray, *, seed: int = 0) -> ModalityGate:
    """Logistic regression of modality (1) against everything else (0), classes weighted equally, on
    standardized features; the standardization is folded into the weights."""
    features = np.concatenate([positive, negative]).astype(np.float64)
    target = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    mean, scale = features.mean(0), features.std(0) + 1e-6
    regression = LogisticRegression(C=0.1, class_weight="balanced", max_iter=5000, random_state=seed)
    regression.fit((features - mean) / scale, target)
    weight = regression.coef_[0] / scale
    bias = float(regression.intercept_[0] - (weight * mean).sum())
    return ModalityGate(weight=torch.as_tensor(weight, dtype=torch.float32), bias=bias)


def shift_layer_of(model) -> str:
    """``trunk`` for a model with a (frozen, pretrained) trunk, ``last`` for one without (the baseline CNN)."""
    return "trunk" if any(True for _ in model.trunk.parameters()) else "last"


@torch.inference_mode()
def model_features(model, grays: list[np.ndarray], *, precision: str = "fp32", device="cpu",
                   batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(the trunk's pooled output, the pooled last feature map = the head's input) for grey images."""
    from pneumoscan.device import autocast_for

    device = torch.device(device)
    model = model.to(device).eval()
    trunk, last = [], []
    for start in range(0, len(grays), batch_size):
        batch = torch.stack([model.preprocessing.to_tensor(g) for g in grays[start:start + batch_size]]).to(device)
        with autocast_for(device, precision):
            activations = model.trunk(batch)
            trunk.append(activations.float().mean(dim=(2, 3)).cpu().numpy())
            last.append(model.tail(activations).float().mean(dim=(2, 3)).cpu().numpy())
    if not last:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(trunk), np.concatenate(last)


def pooled_features(model, grays: list[np.ndarray], **options) -> np.ndarray:
    """The model's pooled last feature map (the head's input, what the gate reads) for grey images."""
    return model_features(model, grays, **options)[1]


def example_images(source: str, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` readable images (evenly spaced) of a folder or path CSV; unreadable ones are skipped."""
    paths = expand_inputs([source])
    if not paths:
        raise ValueError(f"{source}: no images found for the input check")
    images = []
    for i in evenly_spaced(len(paths), limit):
        try:
            images.append(load_image(paths[i]))
        except ImageLoadError as err:
            log.warning("input-check example skipped: %s", err)
    return images


def exposure_variants(grays: list[np.ndarray]) -> list[np.ndarray]:
    """Each image over- and under-exposed (gamma 0.5 and 2) and with its contrast halved: X-rays all the same."""
    variants = []
    for gray in grays:
        variants += [gray ** 0.5, gray ** 2.0, 0.25 + 0.5 * gray]
    return variants


def resampled_copies(model, paths: list[str]) -> list[np.ndarray]:
    """Each image at the model's input size under every shift of ``RESAMPLINGS``."""
    from pneumoscan.data.shifts import apply_shift

    images = [model.preprocessing.resize(load_image(p)) for p in paths]
    return [apply_shift(image, name, index=i)[0].numpy() for name in RESAMPLINGS for i, image in enumerate(images)]


def fit_input_checks(model, train_features: np.ndarray, val_features: np.ndarray, train_images: list[str],
                     settings: InputCheckSettings, *, shift_features: tuple[np.ndarray, np.ndarray], seed: int = 0,
                     precision: str = "fp32", device="cpu") -> tuple[InputChecks, dict]:
    """Fit both checks for a trained model; returns them and a report of what they were fitted on.

    ``train_features``/``val_features`` are the pooled last feature maps of the clean training and
    validation images (the gate's input); ``shift_features`` the same images' features at
    ``shift_layer_of(model)`` (train, validation); ``train_images`` the training paths, some of which are
    also given over- and under-exposed.
    """
    features = lambda grays: pooled_features(model, grays, precision=precision, device=device)  # noqa: E731
    exposure_paths = [train_images[i] for i in evenly_spaced(len(train_images), settings.exposure_examples)]
    positive = [train_features, features(exposure_variants([load_image(p) for p in exposure_paths]))]
    report = {"training_images": len(train_features), "exposure_variants": len(positive[1]), "accept": {},
              "refuse": {}, "made": {}}
    for source in settings.accept:
        positive.append(features(example_images(source, settings.examples_per_source)))
        report["accept"][source] = len(positive[-1])
    negative = []
    for kind, grays in made_images(settings.made_per_kind, seed=seed).items():
        negative.append(features(grays))
        report["made"][kind] = len(grays)
    for source in settings.refuse:
        negative.append(features(example_images(source, settings.examples_per_source)))
        report["refuse"][source] = len(negative[-1])
    positive, negative = np.concatenate(positive), np.concatenate(negative)
    gate = fit_gate(positive, negative, seed=seed)
    report["fit_accepted"] = float((gate.probability(positive) >= gate.threshold).mean())
    report["fit_refused"] = float((gate.probability(negative) < gate.threshold).mean())
    log.info("input check fitted on %d %s images and %d others: accepts %.1f%% and refuses %.1f%% of them",
             len(positive), settings.modality, len(negative), 100 * report["fit_accepted"],
             100 * report["fit_refused"])
    layer = shift_layer_of(model)
    resampled_paths = [train_images[i] for i in evenly_spaced(len(train_images), settings.resampled_examples)]
    resampled = model_features(model, resampled_copies(model, resampled_paths), precision=precision,
                               device=device)[0 if layer == "trunk" else 1]
    report["resampled_copies"] = len(resampled)
    shift_train = np.concatenate([shift_features[0], resampled]) if len(resampled) else shift_features[0]
    checks = InputChecks(shift=fit_shift(shift_train, shift_features[1], quantile=settings.flag_quantile), gate=gate,
                         modality=settings.modality, population=settings.population or "the training images",
                         shift_layer=layer)
    report["shift_layer"] = layer
    return checks, report

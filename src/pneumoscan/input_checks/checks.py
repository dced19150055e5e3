"""The two input checks that travel inside every model, with two different answers.

- *Not the model's modality* (for a chest X-ray model: a photo, document,
  screenshot, noise, another modality, a blank or a colour image): **refused**, never scored. Two
  rules run on the decoded file (blank: grey levels that barely vary; colour: a colourful file, since
  X-rays are grey), and ``ModalityGate`` learns the rest: a logistic regression on the model's pooled
  features, fitted with the training images and any other examples of the modality (other hospitals,
  adults, other devices) as positives, and made non-X-ray images (``data.not_xray``) and any examples
  of other modalities as negatives. Fitting on the training images alone cannot tell "another
  hospital" from "not an X-ray"; examples of both sides can.
- *The modality, but unlike the training population* (adult films, another scanner or hospital):
  **scored and flagged**. ``PopulationShift`` scores two things and flags an image when either is over
  its limit (its score, the larger of the two ratios to their limits, is then above 1):
  - novelty: the squared Mahalanobis distance of pooled features from the training images' (Ledoit-Wolf
    covariance, divided by the feature count). It reads the frozen trunk's pooled output where the
    model has one (generic ImageNet features keep what sets one population of films apart), else the
    last feature map. The Gaussian is fitted on the training images and resampled copies of some of
    them (blur, half resolution, sharpening, JPEG): how a film was resized or compressed does not make
    it another population.
  - with examples of other populations (``accept``): a logistic regression of "those populations" against
    "the training images and their resampled copies" on the last pooled features. It learns what sets
    the other films apart and ignores how a film was resampled, so the novelty limit can then sit at a
    quantile of validation *and its resampled copies* that only real novelty passes. The classifier's own
    limit is read on its examples by 5-fold cross-validation: the probability that flags
    ``OTHER_POPULATION_RECALL`` of the held-out folds (never under 0.5), so a film it is only half sure
    of is not flagged when real other-population films sit far higher. Without examples, novelty alone
    flags, at a quantile of the clean validation scores.

Both read features the model computes anyway, so checking costs two small matrix products.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch

from pneumoscan.data.tasks import with_article

log = logging.getLogger(__name__)

BLANK_STD = 0.01       # grey levels varying less than this: blank, nothing to screen
COLOUR_LIMIT = 12.0    # colourfulness above this: a colour image (grey and faintly tinted files are under it)
GATE_THRESHOLD = 0.5   # refuse when the gate's probability of the modality is below this
RESAMPLINGS = ("blur_1", "lowres_0.5", "sharpen", "jpeg_15")  # data.shifts that change no population


@dataclass(frozen=True)
class InputCheckSettings:
    """How a run fits its input checks (part of the training settings)."""

    accept: tuple[str, ...] = ()       # more images of the modality (folders or CSVs with a path column):
                                       # other hospitals, ages, devices; never refused for being unlike training
    refuse: tuple[str, ...] = ()       # images of other modalities or body parts (folders or path CSVs)
    examples_per_source: int = 600     # at most this many images are read from each accept/refuse source
    made_per_kind: int = 80            # made non-X-ray images of each kind of data.not_xray.KINDS
    exposure_examples: int = 200       # training images also given over- and under-exposed, as positives
    resampled_examples: int = 500      # training images also resampled (RESAMPLINGS) and re-encoded for the shift score
    flag_quantile: float = 0.995       # novelty limit without accept examples: this quantile of validation's
    novelty_quantile: float = 0.999    # novelty limit with accept examples: this quantile of validation and of
                                       # resampled copies of validation images
    population_c: float = 0.01         # inverse L2 strength of the other-population classifier

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


FLAG_ABOVE = 1.0          # a population-shift score above this is flagged
POPULATION_LIMIT = 0.5    # the other-population classifier flags above at least this probability
OTHER_POPULATION_RECALL = 0.99  # its limit flags this share of held-out folds of the examples of other populations
NO_CLASSIFIER_BIAS = -30.0  # without one: sigmoid(-30) = 0, it never flags


def logistic_probability(features: torch.Tensor | np.ndarray, weight: torch.Tensor, bias: float) -> np.ndarray:
    """sigmoid(features @ weight + bias) in float32: what every logistic check of the pooled features computes."""
    return torch.sigmoid(torch.as_tensor(np.asarray(features), dtype=torch.float32) @ weight + bias).numpy()


@dataclass
class PopulationShift:
    """Novelty (squared Mahalanobis distance divided by the feature count, flagged above ``threshold``) and,
    when fitted, the probability of another population (flagged above ``population_limit``); the score is
    the larger ratio to its limit, flagged above ``FLAG_ABOVE``."""

    mean: torch.Tensor        # [C] of the shift layer's pooled features
    precision: torch.Tensor   # [C, C]
    threshold: float          # the novelty limit
    quantile: float
    weight: torch.Tensor | None = None   # [C_last] other-population classifier on the last pooled features
    bias: float = NO_CLASSIFIER_BIAS
    population_limit: float = POPULATION_LIMIT

    def novelty(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        centred = features - self.mean
        return (((centred @ self.precision) * centred).sum(dim=1) / features.shape[1]).numpy()

    def other_population(self, last: torch.Tensor | np.ndarray | None) -> np.ndarray | None:
        if self.weight is None or last is None:
            return None
        return logistic_probability(last, self.weight, self.bias)

    def score(self, features: torch.Tensor | np.ndarray, last: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
        """``features`` at the shift layer; ``last`` the last pooled features (for the classifier, when fitted)."""
        ratio = self.novelty(features) / self.threshold
        other = self.other_population(last)
        return ratio if other is None else np.maximum(ratio, other / self.population_limit)


@dataclass
class ModalityGate:
    """P(modality) = sigmoid(features @ weight + bias), on raw pooled features (the scaling is folded in)."""

    weight: torch.Tensor      # [C]
    bias: float
    threshold: float = GATE_THRESHOLD

    def probability(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        return logistic_probability(features, self.weight, self.bias)


SHIFT_LAYERS = ("trunk", "last")  # where the shift score's features are pooled from


@dataclass
class InputChecks:
    """What a model knows about its inputs: the gate and the shift score (the words to report them in are
    the model's description's modality and population)."""

    shift: PopulationShift
    gate: ModalityGate | None
    shift_layer: str = "last"          # "trunk": the frozen trunk's pooled output; "last": the last feature map

    def to_state(self) -> dict:
        return {"shift": {"mean": self.shift.mean, "precision": self.shift.precision,
                          "threshold": self.shift.threshold, "quantile": self.shift.quantile,
                          "weight": self.shift.weight, "bias": self.shift.bias,
                          "population_limit": self.shift.population_limit},
                "gate": {"weight": self.gate.weight, "bias": self.gate.bias, "threshold": self.gate.threshold}
                if self.gate else None,
                "shift_layer": self.shift_layer}

    @classmethod
    def from_state(cls, state: dict) -> InputChecks:
        shift = state["shift"]
        gate = state.get("gate")
        weight = shift.get("weight")
        return cls(shift=PopulationShift(mean=shift["mean"].float(), precision=shift["precision"].float(),
                                         threshold=float(shift["threshold"]), quantile=float(shift["quantile"]),
                                         weight=None if weight is None else weight.float(),
                                         bias=float(shift.get("bias", NO_CLASSIFIER_BIAS)),
                                         population_limit=float(shift.get("population_limit", POPULATION_LIMIT))),
                   gate=ModalityGate(weight=gate["weight"].float(), bias=float(gate["bias"]),
                                     threshold=float(gate["threshold"])) if gate else None,
                   shift_layer=state.get("shift_layer", "last"))


def is_blank(gray: np.ndarray) -> bool:
    """Whether an image is (nearly) uniform: nothing to screen."""
    return float(np.std(gray)) < BLANK_STD


def rule_refusal(gray: np.ndarray, colour: float, modality: str) -> str:
    """Why a decoded file is refused before the network sees it ("" when it passes)."""
    if is_blank(gray):
        return "the image is blank (uniform grey levels); nothing to screen"
    if colour > COLOUR_LIMIT:
        return f"a colour image (colourfulness {colour:.0f} > {COLOUR_LIMIT:.0f}), not {with_article(modality)}"
    return ""


def shift_layer_of(model) -> str:
    """``trunk`` for a model with a (frozen, pretrained) trunk, ``last`` for one without (the baseline CNN)."""
    trunk = getattr(model.trunk, "body", model.trunk)  # without a lung front (anatomy.front)
    return "trunk" if any(True for _ in trunk.parameters()) else "last"

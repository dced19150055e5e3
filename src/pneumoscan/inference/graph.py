"""The screening graph: one forward pass gives the class probabilities, the heatmap and both input-check
scores, and for a model that carries a lung segmenter the lung field and the frontal check's novelty.
PyTorch runs it as it is (``runtime.TorchModel``); ``export`` writes it as ONNX or TorchScript, with
``model_metadata`` (the model's description) beside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pneumoscan.anatomy.segmenter import LungSegmenter, segmenter_from_state, squashed
from pneumoscan.inference.heatmaps import ClosedFormGradCAM, scale_maps
from pneumoscan.input_checks.checks import NO_CLASSIFIER_BIAS, POPULATION_LIMIT, InputChecks
from pneumoscan.models.checkpoint import LoadedModel
from pneumoscan.models.networks import ScreeningNet

METADATA_KEY = "pneumoscan"
OUTPUTS = ("probabilities", "heatmaps", "shift_score", "modality_probability")
ANATOMY_OUTPUTS = ("lungs", "frontal_novelty")  # with a lung segmenter: P(lung) per input pixel, and its novelty


def graph_outputs(loaded: LoadedModel) -> tuple[str, ...]:
    """The names of the serving graph's outputs for ``loaded`` (in order)."""
    return OUTPUTS + (ANATOMY_OUTPUTS if loaded.anatomy else ())


class LungField(nn.Module):
    """network inputs ``[B, C, S, S]`` -> P(lung) per pixel ``[B, S, S]`` and the frontal check's novelty ``[B]``
    (``anatomy.frontal``: over 1 is unlike every validation film; 0 without a fitted check).

    The grey film is the first channel with the classifier's normalisation undone; the segmenter standardises
    each film itself, so its own preprocessing is only the squash to its side."""

    def __init__(self, segmenter: LungSegmenter, mean: float, std: float):
        super().__init__()
        self.net, self.side, self.mean, self.std = segmenter.net, segmenter.settings.image_size, mean, std
        check = segmenter.frontal
        features = 4 * segmenter.settings.channels[-1]
        self.register_buffer("frontal_mean", check.mean.clone() if check else torch.zeros(features))
        self.register_buffer("frontal_precision", check.precision.clone() if check else torch.zeros(features, features))
        self.register_buffer("novelty_limit", torch.tensor([check.novelty_limit if check else 1.0]))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        films = squashed(images[:, :1].float() * self.std + self.mean, self.side)
        logits, features = self.net.with_features(films)
        size = (images.shape[-2], images.shape[-1])
        lungs = torch.sigmoid(F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False))[:, 0]
        centred = features - self.frontal_mean
        novelty = ((centred @ self.frontal_precision) * centred).sum(dim=1) / self.novelty_limit
        return lungs, novelty
NO_GATE_BIAS = 30.0  # a model without a modality gate: sigmoid(30) = 1, every image passes


class ServingGraph(nn.Module):
    """images ``[B, C, S, S]`` -> class probabilities ``[B, K]``, a Grad-CAM heatmap per class ``[B, K, S, S]``
    (the screening shows its decision's, or the class asked for), population-shift score ``[B]`` and modality
    probability ``[B]``.

    Without input checks the shift score is 0 and the modality probability 1. The shift score is
    ``PopulationShift.score``: the larger of novelty over its limit (on the trunk's pooled output or the
    last feature map's, as the checks were fitted) and the other-population probability over its limit.
    """

    def __init__(self, model: ScreeningNet, checks: InputChecks | None = None, anatomy: dict | None = None):
        super().__init__()
        preprocessing = model.preprocessing
        self.lungs = (LungField(segmenter_from_state(anatomy), preprocessing.mean[0], preprocessing.std[0])
                      if anatomy else None)
        self.trunk, self.tail = model.trunk, model.tail
        self.gradcam = ClosedFormGradCAM(model.head)
        features = model.head[3].in_features
        shift, gate = (checks.shift, checks.gate) if checks else (None, None)
        self.shift_on_trunk = bool(checks) and checks.shift_layer == "trunk"
        size = shift.mean.shape[0] if shift else features
        self.register_buffer("shift_mean", shift.mean.clone() if shift else torch.zeros(size))
        self.register_buffer("shift_precision", shift.precision.clone() if shift else torch.zeros(size, size))
        self.register_buffer("novelty_limit", torch.tensor([shift.threshold if shift else 1.0]))
        has_classifier = shift is not None and shift.weight is not None
        self.register_buffer("population_weight", shift.weight.clone() if has_classifier else torch.zeros(features))
        self.register_buffer("population_bias", torch.tensor([shift.bias if has_classifier else NO_CLASSIFIER_BIAS]))
        self.register_buffer("population_limit", torch.tensor([shift.population_limit if shift else POPULATION_LIMIT]))
        self.register_buffer("gate_weight", gate.weight.clone() if gate else torch.zeros(features))
        self.register_buffer("gate_bias", torch.tensor([gate.bias if gate else NO_GATE_BIAS]))

    @classmethod
    def of(cls, loaded: LoadedModel) -> ServingGraph:
        """The serving graph of a loaded model, with its input checks and lung segmenter."""
        return cls(loaded.model.eval(), loaded.checks, loaded.anatomy).eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.screen(images)
        return outputs + self.lungs(images) if self.lungs is not None else outputs

    def screen(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        front = getattr(self.trunk, "front", None)  # a model that sees only the lung field (anatomy.front)
        field = front.field(images) if front is not None else None
        activations = self.trunk.body(front.view(images, field)) if front is not None else self.trunk(images)
        fmap = self.tail(activations)
        logit, cams = self.gradcam(fmap)
        size = (images.shape[-2], images.shape[-1])
        heatmaps = scale_maps(cams.flatten(0, 1), size).reshape(-1, cams.shape[1], *size)
        if front is not None:
            heatmaps = front.on_input(heatmaps, field)
        pooled = fmap.float().mean(dim=(2, 3))
        shift_features = activations.float().mean(dim=(2, 3)) if self.shift_on_trunk else pooled
        centred = shift_features - self.shift_mean
        novelty = ((centred @ self.shift_precision) * centred).sum(dim=1) / centred.shape[1]
        other_population = torch.sigmoid(pooled @ self.population_weight + self.population_bias)
        shift_score = torch.maximum(novelty / self.novelty_limit, other_population / self.population_limit)
        modality = torch.sigmoid(pooled @ self.gate_weight + self.gate_bias)
        if logit.ndim == 2:  # one logit per class: softmax
            return torch.softmax(logit.float(), dim=1), heatmaps, shift_score, modality
        positive = torch.sigmoid(logit.float())
        return torch.stack([1 - positive, positive], dim=1), heatmaps, shift_score, modality


def model_metadata(loaded: LoadedModel) -> dict:
    """What a runtime needs besides the graph: the model's description, and what the graph's outputs are."""
    heatmap = ("Grad-CAM of every class on the last feature map, in class order (two classes: the first class's "
               "map explains -logit, the second's +logit); a screening shows its decision's")
    return {"outputs": list(graph_outputs(loaded)), "heatmap": heatmap, "description": loaded.description.to_dict()}

"""Fast Grad-CAM for a ``ScreeningNet`` (one logit or one per class), with no hooks and no backbone
backward pass.

Grad-CAM needs the gradient of the explained score only with respect to the last feature map A.
The score depends on A through the head alone (GAP -> dropout -> linear -> ReLU -> dropout ->
linear), so we run the network up to A without autograd and differentiate the head only: a
prediction with its heatmap costs little more than the prediction. The serving graph writes the same
gradient as plain operations of the head (``inference.heatmaps.ClosedFormGradCAM``), with no autograd.

Maps follow pytorch-grad-cam's conventions so the two agree to float precision: ReLU of the
weighted sum, min-max scaled per image, bilinearly resized to the input size, min-max scaled again.
A map that is zero everywhere (all evidence negative) stays zeros, flagged ``empty``, never NaN.

The explained class is the predicted one by default, or any named class (``target``). Min-max scaling
makes every map span [0, 1] whatever the model believes; ``scale="probability"`` multiplies each map by
the probability of the class it explains, so that maps compare across images (a class the model rules
out gets a dark map, not a bright spot).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pneumoscan.data.labels import CLASSES
from pneumoscan.device import autocast_for
from pneumoscan.inference.heatmaps import scale_maps
from pneumoscan.models.networks import ScreeningNet

TARGETS = ("predicted",)  # or any class name of the model
SCALES = ("image", "probability")


@dataclass
class Explanation:
    """Heatmaps ``[B, H, W]`` in [0, 1] at input resolution, with the model's probabilities."""

    heatmaps: np.ndarray
    probabilities: np.ndarray   # [B]: the positive class's (one logit), or [B, K]
    signs: np.ndarray           # one logit: +1 where the positive class was explained, -1 the other; else +1
    empty: np.ndarray           # True where the map is zero everywhere (no positive evidence)
    method: str
    explained: np.ndarray | None = None  # the class index each map explains

    def explained_probability(self) -> np.ndarray:
        """The probability of the class each map explains."""
        if self.probabilities.ndim == 1:
            return np.where(self.explained == 1, self.probabilities, 1 - self.probabilities)
        return self.probabilities[np.arange(len(self.probabilities)), self.explained]


def explained_classes(target: str, logits: torch.Tensor, classes: tuple[str, ...] = CLASSES,
                      threshold: float = 0.5) -> torch.Tensor:
    """The class index to explain per image: the predicted class, or the one named (any case)."""
    names = [c.lower() for c in classes]
    if target == "predicted":
        if logits.ndim == 1:
            return (torch.sigmoid(logits) >= threshold).long()
        return logits.argmax(dim=1)
    if target.lower() not in names:
        raise ValueError(f"target {target!r}: choose predicted or a class of the model: {list(classes)}")
    return torch.full((len(logits),), names.index(target.lower()), dtype=torch.long)


def explained_score(logits: torch.Tensor, explained: torch.Tensor) -> torch.Tensor:
    """The logit whose gradient is explained: +-the single logit, or the explained class's logit."""
    if logits.ndim == 1:
        return torch.where(explained == 1, logits, -logits)
    return logits.gather(1, explained[:, None]).squeeze(1)


def probabilities_of(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if logits.ndim == 1 else torch.softmax(logits, dim=1)


def gradcam(model: ScreeningNet, images: torch.Tensor, *, target: str = "predicted", threshold: float = 0.5,
            precision: str = "fp32", classes: tuple[str, ...] = CLASSES, scale: str = "image",
            explained: torch.Tensor | None = None) -> Explanation:
    """Grad-CAM of ``model`` (in eval mode) on a batch ``[B, C, H, W]``; gradients through the head only.
    ``explained``: the class index to explain per image, when a screening already decided it (else ``target``)."""
    with torch.no_grad(), autocast_for(images.device, precision):
        fmap = model.feature_map(images)
    fmap = fmap.float().requires_grad_(True)
    with torch.enable_grad():
        logits = model.head(fmap).squeeze(1)
        if explained is None:
            explained = explained_classes(target, logits.detach(), classes, threshold)
        (grads,) = torch.autograd.grad(explained_score(logits, explained).sum(), fmap)
    with torch.no_grad():
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cams = torch.relu((weights * fmap).sum(dim=1))
        return on_the_film(model, images, explanation_of(cams, logits.detach(), explained, images.shape[-2:],
                                                         "gradcam", scale))


def on_the_film(model: ScreeningNet, images: torch.Tensor, explanation: Explanation) -> Explanation:
    """A feature-map explanation placed on the input films: a model that sees a lung crop (``lungs=crop``) has its
    maps drawn on the crop, mapped back here (0 outside the crop)."""
    if getattr(model.trunk, "front", None) is None:
        return explanation
    with torch.no_grad():
        maps = torch.from_numpy(explanation.heatmaps)[:, None].to(images.device)
        explanation.heatmaps = model.on_input(maps, images.float())[:, 0].cpu().numpy()
    return explanation


def explanation_of(cams: torch.Tensor, logits: torch.Tensor, explained: torch.Tensor, size, method: str,
                   scale: str = "image") -> Explanation:
    """Scaled maps with the probabilities and explained classes they go with."""
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r}: choose one of {SCALES}")
    heatmaps = scale_maps(cams.float(), tuple(size)).cpu().numpy()
    signs = (2 * explained - 1) if logits.ndim == 1 else torch.ones_like(explained)
    result = Explanation(heatmaps=heatmaps, probabilities=probabilities_of(logits.float()).cpu().numpy(),
                         signs=signs.float().cpu().numpy(), empty=(cams.flatten(1).amax(1) <= 0).cpu().numpy(),
                         method=method, explained=explained.cpu().numpy())
    if scale == "probability":
        result.heatmaps = result.heatmaps * result.explained_probability()[:, None, None].astype(np.float32)
    return result

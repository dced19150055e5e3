"""Fast Grad-CAM for a single-logit ``PneumoniaNet``, with no hooks and no backbone backward pass.

Grad-CAM needs the gradient of the explained score only with respect to the last feature map A.
The score depends on A through the head alone (GAP -> dropout -> linear -> ReLU -> dropout ->
linear), so we run the network up to A without autograd and differentiate the head only: a
prediction with its heatmap costs little more than the prediction. For ONNX export the same
gradient is written as plain operations of the head (``ClosedFormGradCAM``), with no autograd.

Maps follow pytorch-grad-cam's conventions so the two agree to float precision: ReLU of the
weighted sum, min-max scaled per image, bilinearly resized to the input size, min-max scaled again.
A map that is zero everywhere (all evidence negative) stays zeros, flagged ``empty``, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pneumoscan.device import autocast_for
from pneumoscan.models import ClassifierHead, PneumoniaNet

TARGETS = ("pneumonia", "normal", "predicted")
EPS = 1e-7  # pytorch-grad-cam's guard in its min-max scaling


@dataclass
class Explanation:
    """Heatmaps ``[B, H, W]`` in [0, 1] at input resolution, with the model's probabilities."""

    heatmaps: np.ndarray
    probabilities: np.ndarray
    signs: np.ndarray           # +1 where the PNEUMONIA logit was explained, -1 for NORMAL
    empty: np.ndarray           # True where the map is zero everywhere (no positive evidence)
    method: str


def target_signs(target: str, logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """+1 (explain PNEUMONIA) or -1 (explain NORMAL) per image."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: choose one of {TARGETS}")
    if target == "pneumonia":
        return torch.ones_like(logits)
    if target == "normal":
        return -torch.ones_like(logits)
    return torch.where(torch.sigmoid(logits) >= threshold, 1.0, -1.0).to(logits.dtype)


def scale_maps(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Min-max scale each map ``[B, h, w]``, resize bilinearly to ``size``, min-max scale again."""
    def minmax(x):
        x = x - x.amin(dim=(1, 2), keepdim=True)
        return x / (EPS + x.amax(dim=(1, 2), keepdim=True))
    resized = F.interpolate(minmax(cams)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return minmax(resized)


def gradcam(model: PneumoniaNet, images: torch.Tensor, *, target: str = "pneumonia", threshold: float = 0.5,
            precision: str = "fp32") -> Explanation:
    """Grad-CAM of ``model`` (in eval mode) on a batch ``[B, C, H, W]``; gradients through the head only."""
    with torch.no_grad(), autocast_for(images.device, precision):
        fmap = model.feature_map(images)
    fmap = fmap.float().requires_grad_(True)
    with torch.enable_grad():
        logits = model.head(fmap).squeeze(1)
        signs = target_signs(target, logits.detach(), threshold)
        (grads,) = torch.autograd.grad((signs * logits).sum(), fmap)
    with torch.no_grad():
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cams = torch.relu((weights * fmap).sum(dim=1))
        return _explanation(cams, logits.detach(), signs, images.shape[-2:], "gradcam")


def _explanation(cams, logits, signs, size, method) -> Explanation:
    heatmaps = scale_maps(cams.float(), tuple(size))
    return Explanation(heatmaps=heatmaps.cpu().numpy(), probabilities=torch.sigmoid(logits).cpu().numpy(),
                       signs=signs.cpu().numpy(), empty=(cams.flatten(1).amax(1) <= 0).cpu().numpy(),
                       method=method)


class ClosedFormGradCAM(nn.Module):
    """(logits, low-resolution Grad-CAM) from the last feature map, with the head's gradient in closed form.

    For logit_k = w2_k . relu(W1 . mean(A) + b1) + b2_k (dropout off at inference), d logit_k / dA[c, i, j]
    = (W1^T (w2_k * [z > 0]))[c] / (h w) at every position, so the Grad-CAM weights are that vector
    divided by h w. One logit (two classes): the positive class's, ``sign`` -1 explains the other; several:
    the map of ``target`` (class indices; default the most probable class). Plain operations only:
    exportable to ONNX, no autograd at run time.
    """

    def __init__(self, head: ClassifierHead):
        super().__init__()
        self.first, self.second = head[3], head[6]

    def forward(self, fmap: torch.Tensor, sign: torch.Tensor | None = None,
                target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        positions = fmap.shape[2] * fmap.shape[3]
        hidden = self.first(fmap.mean(dim=(2, 3)))
        logits = self.second(torch.relu(hidden))
        if logits.shape[1] == 1:
            logit, explained = logits.squeeze(1), self.second.weight  # [1, H]: the positive class's row
        else:
            logit = logits
            explained = self.second.weight[logits.argmax(dim=1) if target is None else target]  # [B, H]
        grad_pooled = ((hidden > 0).to(fmap.dtype) * explained) @ self.first.weight  # d logit / d mean(A)
        weights = grad_pooled / positions  # mean over positions of d logit / dA, the Grad-CAM weights
        if sign is not None:
            weights = weights * sign[:, None]
        cam = torch.relu((weights[:, :, None, None] * fmap).sum(dim=1))
        return logit, cam

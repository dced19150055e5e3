"""The serving graph's heatmaps: Grad-CAM of every class from the last feature map, with the head's
gradient in closed form (no autograd, so ONNX and OpenVINO compute it too), scaled as pytorch-grad-cam
scales its maps (``explain.gradcam`` draws the same maps with autograd, and its tests compare the two).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pneumoscan.models.networks import ClassifierHead

EPS = 1e-7  # pytorch-grad-cam's guard in its min-max scaling


def scale_maps(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Min-max scale each map ``[B, h, w]``, resize bilinearly to ``size``, min-max scale again."""
    def minmax(x):
        x = x - x.amin(dim=(1, 2), keepdim=True)
        return x / (EPS + x.amax(dim=(1, 2), keepdim=True))
    resized = F.interpolate(minmax(cams)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return minmax(resized)


class ClosedFormGradCAM(nn.Module):
    """(logits, low-resolution Grad-CAM) from the last feature map, with the head's gradient in closed form.

    For logit_k = w2_k . relu(W1 . mean(A) + b1) + b2_k (dropout off at inference), d logit_k / dA[c, i, j]
    = (W1^T (w2_k * [z > 0]))[c] / (h w) at every position, so the Grad-CAM weights are that vector
    divided by h w, for every class at once. Plain operations only: exportable to ONNX, no autograd at run
    time.
    """

    def __init__(self, head: ClassifierHead):
        super().__init__()
        self.first, self.second = head[3], head[6]

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, low-resolution Grad-CAM of every class ``[B, K, h, w]``). One logit (two classes): the first
        class's map explains -logit and the second's +logit, as ``gradcam`` with ``target`` does."""
        positions = fmap.shape[2] * fmap.shape[3]
        hidden = self.first(fmap.mean(dim=(2, 3)))
        logits = self.second(torch.relu(hidden))
        rows = self.second.weight  # [K, H], or [1, H] for one logit
        if rows.shape[0] == 1:
            rows, logits = torch.cat([-rows, rows]), logits.squeeze(1)
        on = (hidden > 0).to(fmap.dtype)  # [B, H]
        weights = (on[:, None, :] * rows[None]) @ self.first.weight / positions  # [B, K, C]
        cams = torch.relu(weights @ fmap.flatten(2))  # [B, K, h * w]
        return logits, cams.reshape(fmap.shape[0], rows.shape[0], fmap.shape[2], fmap.shape[3])

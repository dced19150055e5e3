"""Lung-field preprocessing (``--set lungs=crop`` or ``mask``): the lung segmenter in front of a classifier's
trunk, so the network sees only the lungs.

``LungFront`` takes the classifier's normalised inputs and returns inputs of the same shape: ``mask`` keeps the
lung field (P(lung) > 0.5, widened by a few pixels so the lung edges stay) and sets the rest to the mean grey
(0 after normalisation); ``crop`` zooms to the lung field's bounding box, with a margin, stretched to the input
side. Heatmaps drawn on a crop are mapped back to the film with ``on_input``. Plain operations only (sigmoid,
max-pooling, ``affine_grid``/``grid_sample``), so the exported graph does the same.

``FrontedTrunk`` puts the front before a trunk: the frozen trunk's cache then stores what the trunk computed
from the lung field, keyed by the segmenter's weights too; the segmenter itself never trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pneumoscan.anatomy.segmenter import LungNet, squashed

LUNG_OPTIONS = ("none", "crop", "mask")
MASK_WIDENING = 0.04  # mask: the lung field widened by this share of the side on every side
CROP_MARGIN = 0.05    # crop: margin around the lung field's box, as a share of the side


class LungFront(nn.Module):
    """normalised inputs ``[B, C, S, S]`` -> the lung field only, the same shape (``mode``: crop or mask)."""

    def __init__(self, net: LungNet, side: int, mode: str, mean: float, std: float):
        super().__init__()
        if mode not in LUNG_OPTIONS[1:]:
            raise ValueError(f"lungs={mode!r}: choose one of {LUNG_OPTIONS}")
        self.net, self.side, self.mode, self.mean, self.std = net.eval().requires_grad_(False), side, mode, mean, std
        # what the front does, in its state too: an activation cache's key (cache.module_fingerprint) follows it
        self.register_buffer("how", torch.tensor([float(mode == "crop"), MASK_WIDENING, CROP_MARGIN]))

    def train(self, mode: bool = True) -> LungFront:
        return super().train(False)  # the segmenter is trained already; it stays in eval mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.view(images, self.field(images))

    def field(self, images: torch.Tensor) -> torch.Tensor:
        """The lung field as 0/1 per input pixel, ``[B, 1, S, S]``."""
        with torch.no_grad():
            films = squashed(images[:, :1].float() * self.std + self.mean, self.side)
            logits = F.interpolate(self.net(films).float(), size=images.shape[-2:], mode="bilinear",
                                   align_corners=False)
        return (logits > 0).to(images.dtype)

    def view(self, images: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        """What the trunk sees of ``images`` given their lung ``field``."""
        if self.mode == "mask":
            reach = max(1, round(MASK_WIDENING * images.shape[-1]))
            return images * F.max_pool2d(field, 2 * reach + 1, stride=1, padding=reach)
        grid = F.affine_grid(crop_box(field).to(images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def on_input(self, maps: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        """Maps ``[B, K, S, S]`` drawn on what the trunk saw, placed on the films whose lung ``field`` it was (0
        outside a crop)."""
        if self.mode == "mask":
            return maps
        box = crop_box(field)
        scale, shift = box[:, :, :2].diagonal(dim1=1, dim2=2), box[:, :, 2]
        inverse = torch.zeros_like(box)
        inverse[:, 0, 0], inverse[:, 1, 1] = 1 / scale[:, 0], 1 / scale[:, 1]
        inverse[:, :, 2] = -shift / scale
        grid = F.affine_grid(inverse.to(maps.dtype), list(maps.shape), align_corners=False)
        return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def crop_box(field: torch.Tensor) -> torch.Tensor:
    """The affine ``[B, 2, 3]`` (``affine_grid``'s theta) that maps the input square onto the lung field's box with
    its margin; the whole input where no lung was found."""
    side = field.shape[-1]
    margin = CROP_MARGIN * side
    ends = []
    for dim in (2, 3):  # columns (x) first, then rows (y): affine_grid's order
        present = field.amax(dim=(1, dim))  # [B, side] along the other axis
        index = torch.arange(side, dtype=field.dtype, device=field.device)
        first = torch.where(present > 0, index, torch.full_like(index, side)).amin(dim=1)
        last = torch.where(present > 0, index, torch.full_like(index, -1)).amax(dim=1)
        found = last >= first
        low = torch.where(found, (first - margin).clamp(min=0), torch.zeros_like(first))
        high = torch.where(found, (last + 1 + margin).clamp(max=side), torch.full_like(last, side))
        ends.append((2 * low / side - 1, 2 * high / side - 1))
    (x0, x1), (y0, y1) = ends
    zero = torch.zeros_like(x0)
    return torch.stack([torch.stack([(x1 - x0) / 2, zero, (x1 + x0) / 2], dim=1),
                        torch.stack([zero, (y1 - y0) / 2, (y1 + y0) / 2], dim=1)], dim=1)


class FrontedTrunk(nn.Module):
    """``front`` then ``body`` (a classifier's trunk); freezing or training it reaches the body only."""

    def __init__(self, front: LungFront, body: nn.Module):
        super().__init__()
        self.front, self.body = front, body

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.front(images))

    def requires_grad_(self, requires_grad: bool = True) -> FrontedTrunk:
        self.body.requires_grad_(requires_grad)
        return self


def lung_front(segmenter_state: dict, mode: str, mean: float, std: float) -> LungFront:
    """A front from a saved segmenter's state (``anatomy.segmenter.segmenter_state``)."""
    from pneumoscan.anatomy.segmenter import segmenter_from_state

    segmenter = segmenter_from_state(segmenter_state, "the lung segmenter")
    return LungFront(segmenter.net, segmenter.settings.image_size, mode, mean, std)

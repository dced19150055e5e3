"""The lung segmenter: MONAI's 2-D U-Net on a grey film squashed to a small square, standardised per film
inside the network (so an exported graph needs no preprocessing), one logit per pixel for "lung".

``LungSegmenter.masks`` gives each film's lung mask at the film's own size, keeping the two largest
connected regions (two lungs; a consolidated lung is still a lung region); ``regions.lung_regions`` says how
plausible a pair of lungs it is. The segmenter saves itself with its settings, what it was trained on and
its scores, and loads back into the same network (``save_segmenter``/``load_segmenter``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pneumoscan.anatomy.frontal import FrontalCheck
from pneumoscan.anatomy.regions import lung_mask
from pneumoscan.settings import from_dict
from pneumoscan.storage import atomic_save

FORMAT = "pneumoscan-segmenter/1"


@dataclass(frozen=True)
class SegmenterSettings:
    """The network: MONAI ``UNet`` arguments and the side of the square it segments."""

    image_size: int = 128                                # films are squashed to this side
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)   # feature maps per level
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 1


class LungNet(nn.Module):
    """grey films ``[B, 1, S, S]`` in [0, 1] -> lung logits ``[B, 1, S, S]``; each film standardised first."""

    def __init__(self, settings: SegmenterSettings):
        super().__init__()
        from monai.networks.nets import UNet

        self.unet = UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=settings.channels,
                         strides=settings.strides, num_res_units=settings.num_res_units)

    def forward(self, films: torch.Tensor) -> torch.Tensor:
        return self.unet(standardised(films))

    def with_features(self, films: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(lung logits, the bottom layer's output pooled to 2 x 2 ``[B, 4 C]``: what ``frontal`` checks)."""
        kept = []
        hook = bottom_layer(self.unet).register_forward_hook(lambda module, inputs, output: kept.append(output))
        try:
            logits = self.unet(standardised(films))
        finally:
            hook.remove()
        return logits, F.adaptive_avg_pool2d(kept[0].float(), 2).flatten(1)


def standardised(films: torch.Tensor) -> torch.Tensor:
    """Each film to zero mean and unit standard deviation (so any affine grey scale segments alike)."""
    mean = films.mean(dim=(2, 3), keepdim=True)
    return (films - mean) / (films.std(dim=(2, 3), keepdim=True) + 1e-3)


def bottom_layer(unet: nn.Module) -> nn.Module:
    """The deepest layer of a MONAI ``UNet`` (the innermost ``SkipConnection``'s submodule)."""
    from monai.networks.layers import SkipConnection

    node = unet.model[1]
    while isinstance(node.submodule, nn.Sequential) and isinstance(node.submodule[1], SkipConnection):
        node = node.submodule[1]
    return node.submodule


def squashed(films: torch.Tensor, side: int) -> torch.Tensor:
    """Films ``[B, 1, H, W]`` squashed to ``side`` x ``side`` with plain operations every runtime has (bilinear
    to twice the side, then 2 x 2 means: a box-filtered downscale without aliasing)."""
    doubled = F.interpolate(films, size=(2 * side, 2 * side), mode="bilinear", align_corners=False)
    return F.avg_pool2d(doubled, 2)


class LungSegmenter:
    """A trained ``LungNet`` with its settings, behind ``probabilities`` and ``masks``."""

    def __init__(self, net: LungNet, settings: SegmenterSettings, facts: dict | None = None,
                 frontal: FrontalCheck | None = None):
        self.net = net.eval()
        self.settings = settings
        self.facts = facts or {}
        self.frontal = frontal

    def inputs(self, grays: list[np.ndarray]) -> torch.Tensor:
        """Films (grey floats in [0, 1], any size) as the network's input ``[B, 1, S, S]``."""
        side = self.settings.image_size
        resized = [np.asarray(Image.fromarray(np.clip(g, 0, 1).astype(np.float32)).resize((side, side),
                                                                                          Image.BILINEAR))
                   for g in grays]
        return torch.from_numpy(np.stack(resized))[:, None]

    @torch.inference_mode()
    def probabilities(self, grays: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """P(lung) per pixel at the segmenter's side, ``[B, S, S]``."""
        parts = [torch.sigmoid(self.net(self.inputs(grays[i:i + batch_size]))).float()[:, 0].numpy()
                 for i in range(0, len(grays), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.settings.image_size, self.settings.image_size))

    def masks(self, grays: list[np.ndarray], *, size: tuple[int, int] | None = None) -> list[np.ndarray]:
        """Each film's lung mask (bool) at the film's own size, or ``size`` (rows, columns) for all: the
        probability map resized bilinearly, then cut at 0.5, then its two largest regions."""
        masks = []
        for gray, probability in zip(grays, self.probabilities(grays)):
            rows, columns = size or gray.shape
            resized = np.asarray(Image.fromarray(probability.astype(np.float32)).resize((columns, rows),
                                                                                         Image.BILINEAR))
            masks.append(lung_mask(resized))
        return masks


def segmenter_state(segmenter: LungSegmenter) -> dict:
    """The segmenter as plain values and tensors: what ``segmenter.pt`` holds, and what a classifier's checkpoint
    carries when screening draws the lungs."""
    return {"format": FORMAT, "settings": asdict(segmenter.settings), "facts": segmenter.facts,
            "frontal": segmenter.frontal.to_state() if segmenter.frontal else None,
            "state_dict": {k: v.detach().cpu() for k, v in segmenter.net.state_dict().items()}}


def segmenter_from_state(state: dict, origin: str = "") -> LungSegmenter:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{origin}: not a pneumoscan lung segmenter (expected format {FORMAT})")
    settings = from_dict(SegmenterSettings, state["settings"])
    net = LungNet(settings)
    net.load_state_dict(state["state_dict"])
    frontal = FrontalCheck.from_state(state["frontal"]) if state.get("frontal") else None
    return LungSegmenter(net, settings, state.get("facts") or {}, frontal)


def save_segmenter(path: str | Path, segmenter: LungSegmenter) -> None:
    """Weights, settings, facts (what it was trained on, its scores) and the frontal check as one weights-only
    file."""
    atomic_save(segmenter_state(segmenter), path)


def load_segmenter(path: str | Path) -> LungSegmenter:
    """The segmenter saved at ``path`` (a file, or a run folder holding ``segmenter.pt``)."""
    from pneumoscan.run_folder import RunFolder

    path = Path(path)
    if path.is_dir():
        path = RunFolder(path).segmenter
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no lung segmenter; train one with pneumoscan segment train")
    return segmenter_from_state(torch.load(path, map_location="cpu", weights_only=True), str(path))


def described(segmenter: LungSegmenter) -> dict:
    """What a classifier's description says about the segmenter it draws the lungs with."""
    settings = segmenter.settings
    return {"segmenter": f"MONAI UNet {list(settings.channels)} at {settings.image_size} px",
            "trained_on": segmenter.facts.get("trained_on", {}),
            "test_dice": {name: scores.get("dice") for name, scores in (segmenter.facts.get("test") or {}).items()},
            "frontal_check": segmenter.frontal.limits() if segmenter.frontal else None}


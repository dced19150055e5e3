"""Checks that heatmaps mean something: model dependence, faithfulness and localization.

- ``cascading_randomization`` (Adebayo et al. 2018): re-initialize the model from the head down;
  a method that explains the model must produce different maps once the weights are gone.
- ``deletion_insertion``: remove (or reveal) the most salient pixels first, with a blurred image
  as the baseline, and follow the explained class's probability (Petsiuk et al. 2018).
- ``pointing_game`` / ``box_iou``: does the map point into a known lesion box?
- ``border_mass``: how much of a map lies in the image border, where markers and text sit.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from pneumoscan.data.labels import CLASSES, POSITIVE
from pneumoscan.device import autocast_for
from pneumoscan.explain.gradcam import probabilities_of
from pneumoscan.explain.methods import explain, rank_correlation
from pneumoscan.models.networks import ScreeningNet


def _is_stage(module: nn.Module) -> bool:
    """A stage made of blocks (denseblock4, layer4), as opposed to a block of single layers."""
    children = list(module.children())
    return len(children) > 1 and all(list(c.children()) for c in children)


def randomization_order(model: ScreeningNet) -> list[tuple[str, nn.Module]]:
    """The model's blocks from the output down: head, the tail's blocks (last first), the trunk's."""
    def children_reversed(prefix, module):
        blocks = []
        for name, child in reversed(list(module.named_children())):
            if prefix == "tail" and _is_stage(child):
                blocks += [(f"{prefix}.{name}.{g}", m) for g, m in reversed(list(child.named_children()))]
            else:
                blocks.append((f"{prefix}.{name}", child))
        return blocks
    return [("head", model.head)] + children_reversed("tail", model.tail) + children_reversed("trunk", model.trunk)


def last_block_prefix(model: ScreeningNet) -> str:
    """The model's last block: denseblock4 (DenseNet121), layer4 (ResNet50), the last conv block (baseline)."""
    named = [(name, child) for name, child in model.tail.named_children() if list(child.parameters())]
    return f"tail.{[name for name, child in named if list(child.children())][-1]}"


def _reinitialize(module: nn.Module, generator_seed: int) -> None:
    torch.manual_seed(generator_seed)
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.reset_running_stats()


def cascading_randomization(model: ScreeningNet, images: torch.Tensor, *, method: str = "gradcam",
                            target: str = CLASSES[POSITIVE], seed: int = 0) -> list[dict]:
    """Mean Spearman correlation between original and randomized-model maps of class ``target``, block by block.

    Row ``k`` has every block up to and including ``block`` re-initialized; ``last_block`` marks
    the row where the model's last block (``last_block_prefix``) has been randomized entirely.
    """
    original = explain(model, images, method=method, target=target).heatmaps
    randomized = copy.deepcopy(model).eval()
    blocks = dict(randomization_order(randomized))
    prefix = last_block_prefix(randomized)
    last_block = [name for name in blocks if name == prefix or name.startswith(prefix + ".")][-1]
    curve = []
    for step, (name, module) in enumerate(blocks.items()):
        _reinitialize(module, seed + step)
        maps = explain(randomized, images, method=method, target=target).heatmaps
        rho = [rank_correlation(a, b) for a, b in zip(original, maps)]
        curve.append({"block": name, "rank_corr": float(np.mean(rho)),
                      "last_block": name == last_block})
    return curve


def explained_probability(model: nn.Module, images: torch.Tensor, explained: torch.Tensor,
                          precision: str = "fp32") -> np.ndarray:
    """The probability of class ``explained[i]`` for image i: sigmoid of one logit (class 1, or 0 as its
    complement) or the softmax over several."""
    with torch.inference_mode(), autocast_for(images.device, precision):
        probabilities = probabilities_of(model(images).float())
    if probabilities.ndim == 1:
        return torch.where(explained == 1, probabilities, 1 - probabilities).cpu().numpy()
    return probabilities.gather(1, explained[:, None])[:, 0].cpu().numpy()


def deletion_insertion(model: nn.Module, images: torch.Tensor, heatmaps: np.ndarray, explained: np.ndarray, *,
                       steps: int = 10, precision: str = "bf16", blur_sigma: float = 10.0) -> dict[str, np.ndarray]:
    """Per-image deletion and insertion AUCs (probability of the explained class vs share of pixels).

    ``explained``: the class index each map explains (``Explanation.explained``). Deletion replaces the most
    salient pixels by a blurred copy first (lower AUC is better); insertion starts from the blurred copy and
    reveals the most salient first (higher is better).
    """
    blurred = TF.gaussian_blur(images, kernel_size=int(6 * blur_sigma) | 1, sigma=blur_sigma)
    classes = torch.as_tensor(np.asarray(explained), dtype=torch.long, device=images.device)
    batch, height, width = heatmaps.shape
    ranks = np.argsort(np.argsort(-heatmaps.reshape(batch, -1), axis=1), axis=1)  # 0 = most salient
    fractions = np.linspace(0, 1, steps + 1)
    deletion, insertion = np.zeros((batch, steps + 1)), np.zeros((batch, steps + 1))
    for k, fraction in enumerate(fractions):
        top = torch.as_tensor(ranks < fraction * height * width, device=images.device)
        top = top.view(batch, 1, height, width)
        deletion[:, k] = explained_probability(model, torch.where(top, blurred, images), classes, precision)
        insertion[:, k] = explained_probability(model, torch.where(top, images, blurred), classes, precision)
    return {"deletion_auc": np.trapezoid(deletion, fractions, axis=1),
            "insertion_auc": np.trapezoid(insertion, fractions, axis=1)}


def random_maps(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth random maps (the same spatial scale as a CAM): a baseline with no information."""
    rng = np.random.default_rng(seed)
    low = torch.as_tensor(rng.random((shape[0], 1, 7, 7)), dtype=torch.float32)
    maps = torch.nn.functional.interpolate(low, size=shape[1:], mode="bilinear", align_corners=False)[:, 0]
    return maps.numpy()


def center_maps(shape: tuple[int, int, int]) -> np.ndarray:
    """A Gaussian centre prior: the "it looks at the middle of the chest" baseline."""
    _, height, width = shape
    yy, xx = np.mgrid[0:height, 0:width]
    prior = np.exp(-(((yy - height / 2) / (height / 4)) ** 2 + ((xx - width / 2) / (width / 4)) ** 2) / 2)
    return np.repeat(prior[None].astype(np.float32), shape[0], axis=0)


def baseline_maps(shape: tuple[int, int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """The two maps a heatmap must beat on deletion and insertion: smooth random maps and a centre prior."""
    return {"random": random_maps(shape, seed=seed), "center": center_maps(shape)}


def pointing_game(heatmap: np.ndarray, boxes: list[tuple[int, int, int, int]], *, tolerance: int = 15) -> bool:
    """Whether the map's maximum lies within ``tolerance`` pixels of a lesion box (Zhang et al. 2018)."""
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return any(x0 - tolerance <= x <= x1 + tolerance and y0 - tolerance <= y <= y1 + tolerance
               for x0, y0, x1, y1 in boxes)


def box_iou(heatmap: np.ndarray, boxes: list[tuple[int, int, int, int]], *, level: float = 0.5) -> float:
    """IoU of the map thresholded at ``level`` with the union of the lesion boxes."""
    truth = np.zeros(heatmap.shape, bool)
    for x0, y0, x1, y1 in boxes:
        truth[y0:y1 + 1, x0:x1 + 1] = True
    predicted = heatmap >= level
    union = np.logical_or(truth, predicted).sum()
    return float(np.logical_and(truth, predicted).sum() / union) if union else 0.0


def border_mass(heatmaps: np.ndarray, *, band: float = 0.08) -> np.ndarray:
    """Share of each map's total mass within ``band`` (fraction of the side) of the image edge."""
    _, height, width = heatmaps.shape
    by, bx = round(band * height), round(band * width)
    inner = heatmaps[:, by:height - by, bx:width - bx].sum(axis=(1, 2))
    total = heatmaps.sum(axis=(1, 2))
    return np.where(total > 0, 1 - inner / np.maximum(total, 1e-12), np.nan)

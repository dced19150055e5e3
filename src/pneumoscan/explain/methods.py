"""Every explanation method, selectable by name, behind one call: ``explain(model, images, method=...)``.

``gradcam`` is our fast path (``explain.gradcam``). The CAM family comes from pytorch-grad-cam on
the same target layer (the model's tail, whose output is the last feature map) and the same
single-logit target; ``integrated_gradients`` comes from captum. pytorch-grad-cam's hooks live in
its CAM object, used as a context manager, so none is left behind.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputTarget
from torchvision.transforms.v2 import functional as TF

from pneumoscan.data.labels import CLASSES
from pneumoscan.device import autocast_for
from pneumoscan.explain.gradcam import Explanation, explained_classes, explanation_of, gradcam, on_the_film
from pneumoscan.models.networks import ScreeningNet

LIBRARY_CAMS = {
    "gradcam_reference": GradCAM,  # pytorch-grad-cam's own Grad-CAM: the reference for parity and speed
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
}
METHODS = ("gradcam", *LIBRARY_CAMS, "integrated_gradients")


def explain(model: ScreeningNet, images: torch.Tensor, *, method: str = "gradcam", target: str = "predicted",
            threshold: float = 0.5, precision: str = "fp32", classes: tuple[str, ...] = CLASSES,
            scale: str = "image", explained: torch.Tensor | None = None) -> Explanation:
    """Heatmaps of ``method`` for a batch of network inputs; ``target`` picks the explained class
    (``predicted`` or a class name) unless ``explained`` gives each image's class index (a screening's
    decision), ``scale`` how maps are scaled (``explain.gradcam.SCALES``)."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}: choose one of {list(METHODS)}")
    model.eval()
    if method == "gradcam":
        return gradcam(model, images, target=target, threshold=threshold, precision=precision, classes=classes,
                       scale=scale, explained=explained)
    with torch.no_grad(), autocast_for(images.device, precision):
        logits = model(images).float()
    if explained is None:
        explained = explained_classes(target, logits, classes, threshold)
    if method == "integrated_gradients":
        cams = _integrated_gradients(model, images, explained)
    else:
        with LIBRARY_CAMS[method](model=model, target_layers=[model.tail]) as cam:
            if method == "scorecam":
                cam.batch_size = 64
            targets = [BinaryClassifierOutputTarget(k) if logits.ndim == 1 else ClassifierOutputTarget(k)
                       for k in explained.tolist()]
            cams = torch.from_numpy(cam(input_tensor=images, targets=targets))
        return on_the_film(model, images, explanation_of(cams, logits, explained, images.shape[-2:], method, scale))
    return explanation_of(cams, logits, explained, images.shape[-2:], method, scale)


def _integrated_gradients(model: ScreeningNet, images: torch.Tensor, explained: torch.Tensor, *,
                          steps: int = 24) -> torch.Tensor:
    """Positive Integrated-Gradients evidence, summed over channels and smoothed (sigma 3 px).

    The baseline is the image blurred beyond recognition: "no structure" rather than "black",
    which for an X-ray is itself a strong signal.
    """
    from captum.attr import IntegratedGradients

    baseline = TF.gaussian_blur(images, kernel_size=61, sigma=20.0)

    def class_scores(x):  # one logit: column 0 the other class's evidence (-logit), 1 the positive's; else logits
        logit = model(x)
        return torch.stack([-logit, logit], dim=1) if logit.ndim == 1 else logit

    target = explained.tolist()
    attributions = IntegratedGradients(class_scores).attribute(images, baselines=baseline, target=target,
                                                              n_steps=steps, internal_batch_size=len(images) * 8)
    evidence = attributions.sum(dim=1).clamp_min(0)
    return TF.gaussian_blur(evidence[:, None], kernel_size=19, sigma=3.0)[:, 0].detach()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps; 0 when either is constant (it ranks nothing)."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def heatmap_agreement(a: np.ndarray, b: np.ndarray, *, top: float = 0.2) -> dict[str, float]:
    """How much two heatmaps agree: Spearman rank correlation and IoU of their top ``top`` regions."""
    rho = rank_correlation(a, b)
    mask_a, mask_b = a >= np.quantile(a, 1 - top), b >= np.quantile(b, 1 - top)
    iou = np.logical_and(mask_a, mask_b).sum() / max(1, np.logical_or(mask_a, mask_b).sum())
    return {"spearman": rho, "top_iou": float(iou)}

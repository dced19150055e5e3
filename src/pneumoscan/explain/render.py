"""Drawing heatmaps: colour overlays on the grayscale X-ray, labelled panels and grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps

from pneumoscan.evaluate.plots import subplots

CMAP = "jet"


OUTLINE = (255, 255, 255)  # the lung outline's colour


def overlay(gray: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.4, cmap: str = CMAP,
            lungs: np.ndarray | None = None) -> np.ndarray:
    """An RGB uint8 image: the grayscale X-ray with the coloured heatmap blended at ``alpha``, and the outline of
    the ``lungs`` mask when given."""
    base = np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2)
    colour = colormaps[cmap](np.clip(heatmap, 0, 1))[..., :3]
    rgb = (255 * ((1 - alpha) * base + alpha * colour)).round().astype(np.uint8)
    if lungs is not None:
        rgb[outline(lungs)] = OUTLINE
    return rgb


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a mask (in the mask, next to a pixel outside it)."""
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def outline_rgba(mask: np.ndarray) -> np.ndarray:
    """The outline of ``mask`` on a transparent layer (RGBA uint8), for a page to draw over the film."""
    layer = np.zeros((*mask.shape, 4), dtype=np.uint8)
    layer[outline(mask)] = (*OUTLINE, 255)
    return layer


def panel_title(label: str, probability: float, *, threshold: float | None = None, true_label: str | None = None,
                method: str = "gradcam", explained: str = "") -> str:
    """``probability``: the positive class's with a ``threshold`` (two classes), else the label's."""
    title = (f"predicted {label} (p={probability:.3f}, threshold {threshold:.3f})" if threshold is not None
             else f"predicted {label} (p={probability:.3f})")
    if true_label:
        title += f", true {true_label}"
    return f"{title}\n{method}, evidence for {explained or label}"


def save_panel(path: str | Path, gray: np.ndarray, heatmap: np.ndarray, *, title: str, empty: bool = False,
               lungs: np.ndarray | None = None) -> Path:
    """image | heatmap | overlay (with the lung outline when ``lungs`` is given), with a colour bar and a title; an
    empty map says so."""
    fig, axes = subplots(1, 3, figsize=(10.5, 3.9))
    axes[0].imshow(gray, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("X-ray")
    shown = axes[1].imshow(heatmap, cmap=CMAP, vmin=0, vmax=1)
    axes[1].set_title("heatmap" + (" (empty: no positive evidence)" if empty else ""))
    axes[2].imshow(overlay(gray, heatmap, lungs=lungs))
    axes[2].set_title("overlay" + (", lungs outlined" if lungs is not None else ""))
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes.tolist(), fraction=0.025, pad=0.02, label="relative evidence")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)


def save_grid(path: str | Path, images: list[np.ndarray], captions: list[str], *, title: str,
              columns: int = 4) -> Path:
    """A grid of overlays (RGB uint8) with one caption each."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = subplots(rows, columns, figsize=(3.0 * columns, 3.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), images, captions):
        ax.imshow(image)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)

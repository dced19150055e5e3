"""A fixed suite of synthetic acquisition shifts, to test robustness without touching the test split.

X-rays from another site or device differ in sharpness, resolution, exposure (gamma, contrast),
noise, compression and framing. Each shift here is deterministic, so validation images under the
whole suite form a stable "shifted validation" set: a model (and a threshold) that holds up there
is more likely to hold up on data acquired differently.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF


def _blur(sigma: float):
    return lambda x, g: TF.gaussian_blur(x, kernel_size=2 * int(3 * sigma + 0.5) + 1, sigma=sigma)


def _lowres(factor: float):
    def shift(x, g):
        size = list(x.shape[-2:])
        small = [max(8, round(s * factor)) for s in size]
        low = F.interpolate(x[None], size=small, mode="bilinear", antialias=True, align_corners=False)
        return F.interpolate(low, size=size, mode="bilinear", align_corners=False)[0]
    return shift


def _gamma(value: float):
    return lambda x, g: x.clamp(0, 1) ** value


def _contrast(factor: float):
    return lambda x, g: (x - x.mean()) * factor + x.mean()


def _noise(std: float):
    return lambda x, g: x + std * torch.randn(x.shape, generator=g)


def _jpeg(quality: int):
    def shift(x, g):
        buffer = io.BytesIO()
        Image.fromarray((x[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(buffer, "JPEG", quality=quality)
        return torch.from_numpy(np.asarray(Image.open(buffer), np.float32) / 255)[None]
    return shift


def _equalize(x, g):
    image = Image.fromarray((x[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    return torch.from_numpy(np.asarray(ImageOps.equalize(image), np.float32) / 255)[None]


def _sharpen(x, g):
    return x + 1.0 * (x - TF.gaussian_blur(x, kernel_size=7, sigma=1.5))


def _zoom(scale: float):
    """scale < 1 crops the centre (zoom in); scale > 1 shrinks the image inside a black frame."""
    def shift(x, g):
        size = x.shape[-1]
        if scale < 1:
            return TF.resize(TF.center_crop(x, [round(size * scale)] * 2), [size, size], antialias=True)
        inner = TF.resize(x, [round(size / scale)] * 2, antialias=True)
        return TF.center_crop(inner, [size, size])  # centre_crop pads with zeros when the crop is larger
    return shift


SHIFTS = {
    "blur_1": _blur(1.0), "blur_2": _blur(2.0), "lowres_0.5": _lowres(0.5), "lowres_0.25": _lowres(0.25),
    "sharpen": _sharpen, "gamma_0.67": _gamma(0.67), "gamma_1.5": _gamma(1.5), "contrast_0.6": _contrast(0.6),
    "contrast_1.4": _contrast(1.4), "noise_0.04": _noise(0.04), "jpeg_15": _jpeg(15), "equalize": _equalize,
    "zoom_in_0.8": _zoom(0.8), "zoom_out_1.2": _zoom(1.2),
}


def apply_shift(image: torch.Tensor, name: str, *, index: int = 0) -> torch.Tensor:
    """``image`` (1 x S x S in [0, 1]) under the named shift; noise is seeded by ``index``."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}: choose from {sorted(SHIFTS)}")
    generator = torch.Generator().manual_seed(index)
    return SHIFTS[name](image, generator).clamp(0, 1)


def reencoded(gray: np.ndarray, *, index: int = 0, short_side: int = 256) -> np.ndarray:
    """``gray`` (2-D, [0, 1]) as another site's export would hand the same film over: resized with LANCZOS
    to ``short_side`` x W (W / ``short_side`` a seeded aspect ratio from 1.0 to 1.4), saved as JPEG
    (quality 85 or 90, seeded) and decoded. The model's own resize then squashes it like any file, so
    the copy carries another pipeline's resampling and JPEG grid, and the same anatomy."""
    rng = np.random.default_rng(index)
    width = round(short_side * rng.uniform(1.0, 1.4))
    image = Image.fromarray((np.clip(gray, 0, 1) * 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    image.resize((width, short_side), Image.LANCZOS).save(buffer, "JPEG", quality=int(rng.choice([85, 90])))
    return np.asarray(Image.open(buffer), np.float32) / 255

"""Images that are not X-rays, made on the spot: what the input check learns to refuse.

Each kind is drawn from its own seeded generator, so a fitting set and a held-out set are two seeds
of the same kinds: noise, smooth gradients, patterns (checkerboards, stripes), documents (text on a
page), screenshots (windows, buttons, text), colour images, and natural photos from the ones
scikit-image ships (``skimage.data``; split by name, so held-out photos are photos never fitted on).
Every image is a 2-D grayscale float32 array in [0, 1], as ``data.io.load_image`` returns them;
``colour_images`` gives RGB uint8 arrays for the colour rule.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# scikit-image's photos that ship inside the package (no download), split by name for fitting and
# for reporting; both halves hold people, animals, objects and scenes.
PHOTOS_FIT = ("astronaut", "camera", "coffee", "horse", "moon", "page", "text", "brick", "grass", "colorwheel")
PHOTOS_HELD_OUT = ("chelsea", "coins", "rocket", "clock", "gravel", "hubble_deep_field", "immunohistochemistry",
                   "logo", "retina", "cell")
KINDS = ("noise", "gradient", "pattern", "document", "screenshot", "colour", "photo")
WORDS = ("patient report findings image study normal result page table figure total date name the of and "
         "a to in is for on with that as by this are be at from or an it system file edit view help").split()


def made_images(count_per_kind: int, *, seed: int, photos: tuple[str, ...] = PHOTOS_FIT,
                size: int = 256) -> dict[str, list[np.ndarray]]:
    """``count_per_kind`` grayscale images of every kind in ``KINDS``, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    makers = {"noise": _noise, "gradient": _gradient, "pattern": _pattern, "document": _document,
              "screenshot": _screenshot, "colour": lambda r, s: _to_gray(_colour(r, s))}
    images = {kind: [make(rng, size) for _ in range(count_per_kind)] for kind, make in makers.items()}
    images["photo"] = photo_crops(photos, count_per_kind, rng, size)
    return images


def colour_images(count: int, *, seed: int, size: int = 256) -> list[np.ndarray]:
    """RGB uint8 colour images (blobs and colour photos), for the colour rule."""
    rng = np.random.default_rng(seed)
    return [_colour(rng, size) for _ in range(count)]


def skimage_photo(name: str) -> np.ndarray:
    """A photo that ships with scikit-image, as grayscale [0, 1] (colour ones converted like a loader would)."""
    from skimage import data

    image = np.asarray(getattr(data, name)())
    if image.dtype == bool:
        return image.astype(np.float32)
    if image.ndim == 3:
        return _to_gray(image[..., :3])
    return image.astype(np.float32) / 255.0


def photo_crops(names: tuple[str, ...], count: int, rng: np.random.Generator, size: int) -> list[np.ndarray]:
    """``count`` random crops of the named photos, cycling through the names: whole frames and zoomed-in
    crops, turned, flipped, and given another exposure (gamma, contrast, inversion) or blur, so that a few
    photos stand for many."""
    photos = [skimage_photo(name) for name in names]
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape
        if rng.random() < 0.25:  # the whole frame, squashed like a loader would
            crop = photo
        else:
            side = int(min(height, width) * rng.uniform(0.3, 1.0))
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            crop = photo[top:top + side, left:left + side]
        crop = np.rot90(crop, int(rng.integers(4)))
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        crops.append(_exposed(_resize(crop, size), rng))
    return crops


def _exposed(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A photo as another camera or scanner might give it: gamma, contrast, sometimes inverted or blurred."""
    gray = np.clip(gray, 0, 1) ** rng.uniform(0.5, 2.0)
    gray = gray.mean() + (gray - gray.mean()) * rng.uniform(0.6, 1.4)
    gray = 1 - gray if rng.random() < 0.3 else gray
    if rng.random() < 0.3:
        image = Image.fromarray((np.clip(gray, 0, 1) * 255).astype(np.uint8))
        gray = np.asarray(image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0))), np.float32) / 255.0
    return np.clip(gray, 0, 1).astype(np.float32)


def _resize(gray: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray((np.clip(gray, 0, 1) * 255).astype(np.uint8))
    return np.asarray(image.resize((size, size), Image.BILINEAR), np.float32) / 255.0


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255.0


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = rng.integers(4)
    if kind == 0:
        image = rng.random((size, size))
    elif kind == 1:
        image = rng.normal(rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.3), (size, size))
    elif kind == 2:
        image = (rng.random((size, size)) < rng.uniform(0.05, 0.5)).astype(float)
    else:  # smooth noise: blurred at a random scale
        small = rng.random((int(rng.integers(4, 32)),) * 2)
        image = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / 255
    return np.clip(image, 0, 1).astype(np.float32)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = np.mgrid[0:1:size * 1j, 0:1:size * 1j]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * x + np.sin(angle) * y
    if rng.random() < 0.5:  # radial
        ramp = np.hypot(x - rng.random(), y - rng.random())
    ramp = (ramp - ramp.min()) / max(1e-6, ramp.max() - ramp.min())
    low, high = sorted(rng.uniform(0, 1, 2))
    return (low + (high - low) * ramp).astype(np.float32)


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    period = int(rng.integers(4, 64))
    y, x = np.mgrid[0:size, 0:size]
    kind = rng.integers(3)
    if kind == 0:
        image = ((x // period + y // period) % 2).astype(float)
    elif kind == 1:
        image = ((x // period) % 2).astype(float) if rng.random() < 0.5 else ((y // period) % 2).astype(float)
    else:
        image = ((x % period < 2) | (y % period < 2)).astype(float)
    low, high = sorted(rng.uniform(0, 1, 2))
    return (low + (high - low) * image).astype(np.float32)


def _sentence(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(WORDS, size=words))


def _document(rng: np.random.Generator, size: int) -> np.ndarray:
    paper = int(rng.integers(200, 256))
    page = Image.new("L", (size * 2, size * 2), paper)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=int(rng.integers(10, 22)))
    y = int(rng.integers(10, 40))
    while y < size * 2 - 20:
        if rng.random() < 0.1:  # a table rule or a box
            draw.rectangle([20, y, size * 2 - 20, y + int(rng.integers(2, 40))], outline=0)
        ink = int(rng.integers(0, 80))
        draw.text((int(rng.integers(10, 40)), y), _sentence(rng, int(rng.integers(3, 12))), fill=ink, font=font)
        y += int(rng.integers(16, 34))
    page = page.resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:  # a scan: blur and a tilt
        page = page.rotate(rng.uniform(-4, 4), fillcolor=paper).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
    return np.asarray(page, np.float32) / 255.0


def _screenshot(rng: np.random.Generator, size: int) -> np.ndarray:
    dark = rng.random() < 0.4
    background = int(rng.integers(20, 60)) if dark else int(rng.integers(200, 250))
    screen = Image.new("L", (size * 2, size * 2), background)
    draw = ImageDraw.Draw(screen)
    font = ImageFont.load_default(size=int(rng.integers(10, 18)))
    draw.rectangle([0, 0, size * 2, 24], fill=int(rng.integers(0, 255)))  # title bar
    for _ in range(int(rng.integers(3, 10))):  # panels, buttons and their labels
        x0, y0 = int(rng.integers(0, size * 2 - 60)), int(rng.integers(30, size * 2 - 30))
        x1, y1 = min(size * 2, x0 + int(rng.integers(40, 300))), min(size * 2, y0 + int(rng.integers(16, 160)))
        draw.rectangle([x0, y0, x1, y1], fill=int(rng.integers(0, 255)), outline=int(rng.integers(0, 255)))
        draw.text((x0 + 4, y0 + 2), _sentence(rng, int(rng.integers(1, 4))), fill=255 - background, font=font)
    return np.asarray(screen.resize((size, size), Image.BILINEAR), np.float32) / 255.0


def _colour(rng: np.random.Generator, size: int) -> np.ndarray:
    """An RGB uint8 image with strong colour: random coloured blobs on a coloured background."""
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 12))):
        box = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
        draw.ellipse([box[0][0], box[1][0], box[0][1], box[1][1]], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 3))))

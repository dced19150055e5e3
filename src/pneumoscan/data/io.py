"""Reading one image file into a grayscale float array, whatever format a user has.

Handles JPEG/PNG/BMP/TIFF in every Pillow mode (8- and 16-bit grayscale, RGB, RGBA, palette,
CMYK, float) and DICOM (modality LUT, VOI LUT/window, MONOCHROME1 inverted). Every failure is an
``ImageLoadError`` that names the file and the problem, never a raw traceback. ``read_image`` also
says how colourful the file was, which the grey array no longer shows (the input check needs it).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # about 7000 x 7000; larger is refused as a likely decompression bomb
DICOM_SUFFIXES = {".dcm", ".dicom"}


class ImageLoadError(ValueError):
    """An image could not be read; the message names the file and the problem."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


class NotFrontal(ImageLoadError):
    """A DICOM file whose header says it is a lateral view: read, but not a film a frontal-film model may score."""


LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"}  # DICOM ViewPosition values of a lateral projection


def load_image(source: str | Path | bytes, *, name: str | None = None,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file (path or bytes) as a 2-D float32 array in [0, 1] (0 = black).

    8-bit images keep their grey levels (value / 255); images with more bits or floats are
    stretched from their minimum to their maximum, since their stored range varies by device.
    """
    return read_image(source, name=name, max_pixels=max_pixels)[0]


def read_image(source: str | Path | bytes, *, name: str | None = None,
               max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, float]:
    """``load_image``'s grey array and the file's colourfulness (``colourfulness``; 0 for grey files)."""
    name = name or (str(source) if not isinstance(source, bytes) else "<upload>")
    data = _read_bytes(source, name)
    if not data:
        raise ImageLoadError(name, "file is empty")
    if looks_like_dicom(data, name):
        return _load_dicom(data, name, max_pixels)
    return _load_pillow(data, name, max_pixels)


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of an RGB uint8 array: 0 for grey, under about 15 for
    images that look grey or faintly tinted, 30 and more for ordinary colour photos."""
    rgb = np.asarray(rgb, dtype=np.float32)
    red_green = rgb[..., 0] - rgb[..., 1]
    yellow_blue = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    spread = np.hypot(red_green.std(), yellow_blue.std())
    return float(spread + 0.3 * np.hypot(red_green.mean(), yellow_blue.mean()))


def _read_bytes(source: str | Path | bytes, name: str) -> bytes:
    if isinstance(source, bytes):
        return source
    path = Path(source)
    if not path.exists():
        raise ImageLoadError(name, "no such file")
    if path.is_dir():
        raise ImageLoadError(name, "is a folder, not an image file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise ImageLoadError(name, f"cannot be read ({err.strerror or err})") from err


# The first bytes of the image formats the loader reads, for files whose name does not say (a PACS export of DICOM
# files named by their UIDs, a JPEG saved without an extension, an upload named "blob")
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"II*\x00", b"MM\x00*")


def looks_like_image(head: bytes) -> bool:
    """Whether a file's first bytes (132 of them at least, for DICOM) are those of a format the loader reads."""
    return head[128:132] == b"DICM" or head.startswith(IMAGE_SIGNATURES)


def looks_like_dicom(data: bytes, name: str) -> bool:
    """Whether a file is DICOM: the DICM preamble, or a .dcm/.dicom name (files without the preamble)."""
    return data[128:132] == b"DICM" or Path(name).suffix.lower() in DICOM_SUFFIXES


def _check_pixel_count(width: int, height: int, name: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageLoadError(
            name, f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                  f"{max_pixels:,}; refused as a possible decompression bomb")


def _load_pillow(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, float]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixel_count(*image.size, name, max_pixels)
            image.load()
            return _pillow_to_gray(image), _pillow_colourfulness(image)
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        problem = "not an image format that can be read (JPEG, PNG, BMP, TIFF or DICOM)"
        if not isinstance(err, UnidentifiedImageError):
            problem = f"over the pixel limit; refused as a possible decompression bomb ({err})"
        raise ImageLoadError(name, problem) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(name, f"corrupt or truncated image ({err})") from err


def _pillow_colourfulness(image: Image.Image) -> float:
    if image.mode in ("1", "L", "LA", "I", "F") or image.mode.startswith("I;16"):
        return 0.0
    small = image.copy()
    small.thumbnail((128, 128))  # colour is a property of the whole image: a thumbnail measures it
    return colourfulness(np.asarray(small.convert("RGB")))


def _pillow_to_gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))  # transparent reads as black
        image = Image.alpha_composite(background, rgba)
    if image.mode in ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "LA", "PA"):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return _stretch(np.asarray(image, dtype=np.float32))
    raise ValueError(f"unsupported Pillow mode {image.mode}")


def _stretch(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(np.float32)
    low, high = float(np.min(pixels)), float(np.max(pixels))
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError("pixel values are not finite")
    if high <= low:
        return np.zeros_like(pixels)
    return (pixels - low) / (high - low)


def _load_dicom(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, float]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        if "PixelData" not in dataset:
            raise ImageLoadError(name, "DICOM file has no pixel data")
        view = str(dataset.get("ViewPosition", "")).strip().upper()
        if view in LATERAL_VIEWS:
            raise NotFrontal(name, f"not a frontal chest X-ray: the DICOM header says a lateral view (ViewPosition "
                                   f"{view}); lateral views are not scored")
        _check_pixel_count(int(dataset.Columns), int(dataset.Rows), name, max_pixels)
        pixels = dataset.pixel_array
    except ImageLoadError:
        raise
    except (InvalidDicomError, AttributeError, KeyError, ValueError, TypeError, OSError, RuntimeError) as err:
        raise ImageLoadError(name, f"unreadable DICOM ({err})") from err
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]  # a multi-frame object: screen its first frame
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:  # colour DICOM (RGB or YBR already converted by pydicom)
        rgb = pixels.astype(np.uint8)
        return np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255.0, colourfulness(rgb[::4, ::4])
    pixels = apply_modality_lut(pixels, dataset)
    pixels = apply_voi_lut(pixels, dataset, prefer_lut=True)
    gray = _stretch(np.asarray(pixels, dtype=np.float32))
    if photometric == "MONOCHROME1":  # MONOCHROME1 stores air as bright: invert to the usual look
        gray = 1.0 - gray
    return gray, 0.0

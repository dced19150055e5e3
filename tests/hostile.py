"""A folder of files that a deployed screener must handle: chest X-rays in every format the loader
reads, broken files, and every kind of image that is not a chest X-ray. The agreement test and
``bench/qc.py`` screen it with the CLI, the Python API and the web API and compare the answers.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pneumoscan.input_checks.not_xray import PHOTOS_HELD_OUT, colour_images, made_images, skimage_photo


def dicom_bytes(pixels: np.ndarray, photometric: str, window: tuple[float, float] | None = None,
                *, with_pixels: bool = True) -> bytes:
    """A 12-bit monochrome DICOM file (Modality DX) of ``pixels``."""
    from pneumoscan.serve.dicom import new_secondary_capture

    ds = new_secondary_capture()
    ds.Modality, ds.PatientID = "DX", "TEST"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _save(array: np.ndarray, path: Path, **options) -> None:
    Image.fromarray(array).save(path, **options)


def write_hostile_folder(folder: str | Path, xray: str | Path, *, seed: int = 7) -> dict[str, str]:
    """Write the files into ``folder``; returns ``{file name: kind}`` where kind is ``xray``, ``broken`` or
    ``not_xray`` (what a correct screener says: scored, unreadable, refused)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gray = np.asarray(Image.open(xray).convert("L"))
    kinds = {}

    def put(name: str, kind: str, array: np.ndarray | None = None, data: bytes | None = None, **options):
        if data is None:
            _save(array, folder / name, **options)
        else:
            (folder / name).write_bytes(data)
        kinds[name] = kind

    put("xray.jpg", "xray", gray, quality=92)
    put("xray.png", "xray", gray)
    put("xray_16bit.png", "xray", (gray.astype(np.uint16) * 257))
    put("xray.bmp", "xray", gray)
    put("xray.tiff", "xray", gray)
    put("xray_grey_rgb.jpg", "xray", np.repeat(gray[..., None], 3, axis=2), quality=92)
    put("xray_rgba.png", "xray", np.dstack([np.repeat(gray[..., None], 3, axis=2), np.full_like(gray, 255)]))
    put("xray_palette.png", "xray", data=_palette_png(gray))
    put("xray_mono2.dcm", "xray", data=dicom_bytes(gray.astype(np.float64) * 16, "MONOCHROME2"))
    put("xray_mono1.dcm", "xray", data=dicom_bytes(4080 - gray.astype(np.float64) * 16, "MONOCHROME1"))
    jpeg = (folder / "xray.jpg").read_bytes()
    put("empty.png", "broken", data=b"")
    put("truncated.jpg", "broken", data=jpeg[: len(jpeg) // 3])
    put("random_bytes.jpg", "broken", data=np.random.default_rng(seed).bytes(4096))
    put("notes.png", "broken", data=b"meeting notes, not an image\n")
    put("no_pixels.dcm", "broken", data=dicom_bytes(gray, "MONOCHROME2", with_pixels=False))
    put("black.png", "not_xray", np.zeros((256, 256), np.uint8))
    put("white.png", "not_xray", np.full((256, 256), 255, np.uint8))
    rng = np.random.default_rng(seed)
    put("noise_grey.png", "not_xray", rng.integers(0, 256, (256, 256), dtype=np.uint8))
    put("noise_colour.png", "not_xray", rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    made = made_images(1, seed=seed + 1000, photos=PHOTOS_HELD_OUT)
    for kind in ("pattern", "document", "screenshot", "gradient"):
        put(f"{kind}.png", "not_xray", (made[kind][0] * 255).astype(np.uint8))
    put("colour_blobs.jpg", "not_xray", colour_images(1, seed=seed)[0], quality=90)
    put("photo_coins.png", "not_xray", (skimage_photo("coins") * 255).astype(np.uint8))
    put("photo_clock.jpg", "not_xray", (skimage_photo("clock") * 255).astype(np.uint8))
    from skimage import data

    put("photo_chelsea_colour.jpg", "not_xray", data.chelsea(), quality=90)
    return kinds


def _palette_png(gray: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gray).convert("P", palette=Image.ADAPTIVE, colors=64).save(buffer, format="PNG")
    return buffer.getvalue()

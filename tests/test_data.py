"""Tests of pneumoscan.data: image formats, errors, datasets, patient split, preprocessing."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import ORIG256, REAL_DATA, needs
from tests.hostile import dicom_bytes

from pneumoscan.data import (
    Augmentation,
    ImageLoadError,
    Preprocessing,
    XRayDataset,
    find_unreadable,
    label_index,
    load_image,
    load_samples,
    patient_id,
    patient_split,
    read_label_csv,
    read_split,
    scan_kaggle_split,
    write_split,
)
from pneumoscan.data.preprocess import augment, view_generator

GRADIENT = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))  # 24 x 32, left dark, right bright


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "1", "LA"])
def test_pillow_modes_load_as_gray_in_unit_range(mode):
    image = Image.fromarray(GRADIENT).convert(mode)
    gray = load_image(_png(image), name=f"x.{mode}.png")
    assert gray.shape == (24, 32) and gray.dtype == np.float32
    assert 0.0 <= gray.min() and gray.max() <= 1.0
    if mode not in ("1",):
        assert gray[:, -1].mean() > gray[:, 0].mean() + 0.5  # the gradient survives


def test_rgba_transparent_pixels_read_as_black():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 255  # white but fully transparent
    assert load_image(_png(Image.fromarray(rgba, "RGBA"))).max() == 0.0


def test_cmyk_jpeg_loads():
    buffer = io.BytesIO()
    Image.fromarray(GRADIENT).convert("CMYK").save(buffer, format="JPEG")
    gray = load_image(buffer.getvalue(), name="cmyk.jpg")
    assert gray[:, -1].mean() > gray[:, 0].mean()


def test_16bit_png_is_stretched_to_full_range():
    pixels = (np.tile(np.linspace(100, 4000, 32), (8, 1))).astype(np.uint16)  # a 12-bit detector range
    gray = load_image(_png(Image.fromarray(pixels)), name="deep.png")
    assert gray.min() == pytest.approx(0.0) and gray.max() == pytest.approx(1.0)




def test_dicom_monochrome2_and_monochrome1_look_the_same():
    pixels = np.tile(np.linspace(0, 4000, 32), (16, 1))
    mono2 = load_image(dicom_bytes(pixels, "MONOCHROME2"), name="a.dcm")
    mono1 = load_image(dicom_bytes(4000 - pixels, "MONOCHROME1"), name="b.dcm")
    assert mono2[:, -1].mean() > 0.9 and mono2[:, 0].mean() < 0.1
    np.testing.assert_allclose(mono1, mono2, atol=1e-3)


def test_dicom_voi_window_is_applied():
    pixels = np.tile(np.linspace(0, 4000, 32), (16, 1))
    windowed = load_image(dicom_bytes(pixels, "MONOCHROME2", window=(1000, 500)), name="w.dcm")
    # everything above the window (>= 1250) saturates white, below (<= 750) black
    assert (windowed[:, pixels[0] > 1300] > 0.99).all() and (windowed[:, pixels[0] < 700] < 0.01).all()


def test_dicom_without_pixels_names_the_problem():
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientID = "X"
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True)
    with pytest.raises(ImageLoadError, match="nopix.dcm: DICOM file has no pixel data"):
        load_image(buffer.getvalue(), name="nopix.dcm")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares huge dimensions (a decompression bomb) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, problem", [
    (b"", "file is empty"),
    (b"definitely not an image", "not an image format"),
    (_png_header_only(100_000, 100_000), "over the pixel limit; refused as a possible decompression bomb"),
    (_png_header_only(9_000, 9_000), "image is 9000x9000 = 81,000,000 pixels, over the limit"),
])
def test_bad_bytes_give_a_named_clear_error(data, problem):
    with pytest.raises(ImageLoadError, match=f"upload.bin: {problem}"):
        load_image(data, name="upload.bin")


def test_truncated_jpeg_is_reported(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpeg"
    path.write_bytes(buffer.getvalue()[:300])
    with pytest.raises(ImageLoadError, match=r"cut.jpeg: corrupt or truncated"):
        load_image(path)


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(ImageLoadError, match="nope.png: no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)


@pytest.mark.parametrize("name, patient", [
    ("person123_bacteria_456.jpeg", "person123"),
    ("person447_virus_921_1.jpeg", "person447"),
    ("IM-0123-0001.jpeg", "IM-0123"),
    ("NORMAL2-IM-0123-0001.jpeg", "NORMAL2-IM-0123"),
    ("IM-0123-0001-0002.jpeg", "IM-0123"),
    ("scan_42.png", "scan_42"),
])
def test_patient_id_from_kermany_names(name, patient):
    assert patient_id(name) == patient


def test_label_index_accepts_names_and_numbers():
    assert [label_index(v) for v in ("NORMAL", "pneumonia", "0", 1)] == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="unknown label 'cat'"):
        label_index("cat")


def test_scan_and_patient_split_of_phantoms(phantom_root, tmp_path):
    samples = scan_kaggle_split(phantom_root, "train")
    assert len(samples) == 96 and {s.label for s in samples} == {0, 1}
    train, val = patient_split(samples, val_fraction=0.25, seed=3)
    assert not {s.patient for s in train} & {s.patient for s in val}
    assert len(train) + len(val) == 96 and {s.label for s in val} == {0, 1}
    write_split(tmp_path / "split.csv", {"train": train, "val": val})
    assert read_split(tmp_path / "split.csv") == {"train": train, "val": val}


def test_patient_split_is_reproducible_and_seed_dependent(phantom_root):
    samples = scan_kaggle_split(phantom_root, "train")
    first, second = patient_split(samples, seed=1)[1], patient_split(samples, seed=1)[1]
    assert first == second
    assert patient_split(samples, seed=2)[1] != first


def test_label_csv_with_relative_paths(phantom_root, tmp_path):
    images = scan_kaggle_split(phantom_root, "test")[:3]
    csv_path = phantom_root / "three.csv"
    csv_path.write_text("path,label\n" + "".join(f"{s.path},{['NORMAL', 'PNEUMONIA'][s.label]}\n" for s in images))
    assert [s.label for s in read_label_csv(csv_path)] == [s.label for s in images]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nx.png,0\n")
    with pytest.raises(ValueError, match="missing column"):
        read_label_csv(bad)


def test_find_unreadable_reports_and_keeps_going(phantom_root, tmp_path):
    samples = scan_kaggle_split(phantom_root, "test")[:4]
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    from pneumoscan.data import Sample

    result = find_unreadable(samples + [Sample(str(broken), 0, "x")])
    assert list(result) == [str(broken)]


def test_missing_class_folder_is_a_clear_error(tmp_path):
    (tmp_path / "train" / "NORMAL").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="PNEUMONIA"):
        load_samples(tmp_path, "train")


def test_preprocessing_shapes_and_normalization():
    pre = Preprocessing(image_size=32)
    x = pre.to_tensor(np.full((50, 70), 0.5, np.float32))
    assert x.shape == (3, 32, 32)
    expected = (0.5 - torch.tensor(pre.mean)) / torch.tensor(pre.std)
    torch.testing.assert_close(x[:, 0, 0], expected)
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_percentile_intensity_removes_exposure_differences():
    pre = Preprocessing(image_size=16, intensity="percentile")
    base = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    torch.testing.assert_close(pre.to_tensor(base * 0.5 + 0.2), pre.to_tensor(base), atol=1e-4, rtol=0)


def test_augmentation_is_seeded_per_view_and_changes_the_image():
    image = torch.rand(1, 32, 32)
    aug = Augmentation()
    a = augment(image, aug, view_generator(0, 5, 1))
    assert torch.equal(a, augment(image, aug, view_generator(0, 5, 1)))
    assert not torch.equal(a, augment(image, aug, view_generator(0, 5, 2)))
    assert a.shape == image.shape and 0 <= a.min() and a.max() <= 1


def test_augmentation_switched_off_is_identity():
    off = Augmentation(rotation_deg=0, hflip=False, crop_scale=(1.0, 1.0), shift=0, brightness=0, contrast=0,
                       gamma=(1.0, 1.0), blur_sigma=(0.0, 0.0), resolution=(1.0, 1.0), noise_std=0)
    image = torch.rand(1, 32, 32)
    assert torch.equal(augment(image, off, view_generator(0, 0, 0)), image)


def test_dataset_views_and_evaluation_without_augmentation(phantom_root):
    samples = scan_kaggle_split(phantom_root, "train")[:4]
    pre = Preprocessing(image_size=64)
    views = XRayDataset(samples, pre, augmentation=Augmentation(), views=3, seed=0)
    assert len(views) == 12 and views[4][2] == 1  # item 4 = view 1 of image 1
    plain = XRayDataset(samples, pre)
    torch.testing.assert_close(plain[0][0], plain[0][0])
    torch.testing.assert_close(plain[0][0], pre.to_tensor(load_image(samples[0].path)))
    with pytest.raises(ValueError, match="augmentation"):
        XRayDataset(samples, pre, views=2)


@pytest.mark.real_data
@needs(REAL_DATA)
def test_real_dataset_counts_and_patient_split():
    train = scan_kaggle_split(REAL_DATA, "train")
    test = scan_kaggle_split(REAL_DATA, "test")
    assert (sum(s.label == 0 for s in train), sum(s.label == 1 for s in train)) == (1341, 3875)
    assert (sum(s.label == 0 for s in test), sum(s.label == 1 for s in test)) == (234, 390)
    fit, val = patient_split(train, val_fraction=0.15, seed=0)
    assert not {s.patient for s in fit} & {s.patient for s in val}
    assert 0.12 < len(val) / len(train) < 0.18
    assert abs(np.mean([s.label for s in val]) - np.mean([s.label for s in train])) < 0.03


@pytest.mark.real_data
@needs(ORIG256)
def test_varied_sizes_load_and_resize():
    samples = scan_kaggle_split(ORIG256, "val")
    shapes = {load_image(s.path).shape for s in samples}
    assert len(shapes) > 1  # realistic, varied sizes
    pre = Preprocessing()
    assert all(pre.to_tensor(load_image(s.path)).shape == (3, 224, 224) for s in samples[:4])


def test_augmented_views_are_the_same_inside_a_callers_autocast(phantom_root):
    # regression: augmentation run under bf16 autocast (a DataLoader without workers inside the
    # caching loop) distorted every cached view
    samples = scan_kaggle_split(phantom_root, "train")[:3]
    dataset = XRayDataset(samples, Preprocessing(image_size=64), augmentation=Augmentation(), views=2)
    plain = torch.stack([dataset[k][0] for k in range(6)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = torch.stack([dataset[k][0] for k in range(6)])
    assert torch.equal(plain, inside)


def test_every_acquisition_shift_is_deterministic_and_in_range():
    from pneumoscan.data.shifts import SHIFTS, apply_shift

    image = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0))
    for name in SHIFTS:
        shifted = apply_shift(image, name, index=3)
        assert shifted.shape == image.shape and 0 <= shifted.min() and shifted.max() <= 1, name
        assert torch.equal(shifted, apply_shift(image, name, index=3)), name
        assert not torch.equal(shifted, image), name
    with pytest.raises(ValueError, match="blur_1"):
        apply_shift(image, "fog")


def test_a_reencoded_film_keeps_its_anatomy_at_another_size():
    from pneumoscan.data.shifts import reencoded
    from pneumoscan.data.synthetic import make_phantom

    gray = make_phantom(np.random.default_rng(3), pneumonia=True, size=128)[0]
    copy = reencoded(gray, index=5)
    assert copy.shape[0] == 256 and 256 <= copy.shape[1] <= round(256 * 1.4) and copy.dtype == np.float32
    np.testing.assert_array_equal(copy, reencoded(gray, index=5))  # seeded
    assert reencoded(gray, index=6).shape != copy.shape or not np.array_equal(reencoded(gray, index=6), copy)
    back = Preprocessing(image_size=gray.shape[0]).resize(copy)[0].numpy()
    assert np.corrcoef(back.ravel(), gray.ravel())[0, 1] > 0.98 and not np.array_equal(back, gray)


def test_dataset_with_shifts_gives_one_view_per_shift(phantom_root):
    samples = scan_kaggle_split(phantom_root, "test")[:2]
    dataset = XRayDataset(samples, Preprocessing(image_size=64), shifts=("blur_1", "gamma_1.5", "zoom_in_0.8"))
    assert len(dataset) == 6 and dataset[4][2] == 1

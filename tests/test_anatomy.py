"""Tests of anatomy: a segmenter trained on phantoms with drawn lungs finds them, saves, exports with parity
and segments from the CLI; the scores ignore the masks' "ignore" pixels; the shared lung masks are read."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from tests.conftest import SHARED

from pneumoscan.anatomy.masks import IGNORED, read_lung_films, select, validation_split
from pneumoscan.anatomy.scores import film_scores, summary
from pneumoscan.anatomy.segmenter import load_segmenter, lung_regions
from pneumoscan.cli import main
from pneumoscan.data.synthetic import phantom_with_lungs, write_lung_mask_folder

LUNG_MASKS = SHARED / "data" / "lung_masks"
TINY = ["epochs=8", "lr=0.01", "batch_size=8", "segmenter.image_size=64", "segmenter.channels=[8,16,32]",
        "segmenter.strides=[2,2]"]


@pytest.fixture(scope="module")
def lung_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lungs")
    data = write_lung_mask_folder(root / "data", n_train=96, n_test=8, size=64)
    assert main(["segment", "train", "--data", str(data), "--out", str(root / "run"), "--set", *TINY]) == 0
    return root / "run"


def test_a_synthetic_film_with_a_drawn_pair_of_lungs_is_segmented(lung_run):
    metrics = json.loads((lung_run / "metrics.json").read_text())
    assert metrics["test"]["ieee8023_test"]["films"] == 8 and metrics["test"]["ieee8023_test"]["dice"] > 0.9
    segmenter = load_segmenter(lung_run)
    film, lungs = phantom_with_lungs(np.random.default_rng(123), pneumonia=True, size=96)  # unseen, another size
    mask = segmenter.masks([film])[0]
    assert mask.shape == (96, 96)
    assert film_scores([mask], [lungs.astype(np.uint8)])["dice"][0] > 0.85
    regions = lung_regions(mask)
    assert regions.regions == 2 and regions.smaller_share > 0.3 and 0.1 < regions.area_fraction < 0.5


def test_the_segmenter_exports_to_onnx_with_parity_and_segments_from_the_cli(lung_run, tmp_path):
    assert main(["segment", "export", str(lung_run), "--out", str(tmp_path / "onnx")]) == 0
    assert (tmp_path / "onnx" / "lungs.onnx").stat().st_size > 10_000

    from PIL import Image

    film, _ = phantom_with_lungs(np.random.default_rng(7), size=80)
    Image.fromarray((film * 255).astype(np.uint8)).save(tmp_path / "film.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code = main(["segment", "predict", str(lung_run), str(tmp_path / "film.png"), str(tmp_path / "broken.png"),
                 "--out", str(tmp_path / "masks")])
    assert code == 1  # one file could not be read; the other was segmented
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader((tmp_path / "masks" / "lungs.csv").open())}
    assert rows["film.png"]["status"] == "segmented" and float(rows["film.png"]["lung_area_fraction"]) > 0.1
    assert rows["broken.png"]["status"] == "unreadable" and rows["broken.png"]["reason"]
    assert np.asarray(Image.open(tmp_path / "masks" / "film_lungs.png")).shape == (80, 80)


def test_dice_leaves_out_the_ignore_pixels():
    truth = np.zeros((8, 8), np.uint8)
    truth[:, :4] = 1
    truth[0, :] = IGNORED  # a lead over the lung: neither lung nor background
    predicted = truth == 1
    predicted[0, 4:] = True  # wrong only on ignored pixels
    scores = film_scores([predicted], [truth])
    assert scores["dice"][0] == pytest.approx(1.0)
    assert summary(scores, n_boot=10)["dice_under_0.9"] == 0


@pytest.mark.skipif(not (LUNG_MASKS / "MANIFEST.csv").exists(), reason="shared/data/lung_masks is absent")
def test_the_shared_lung_masks_are_read_with_their_splits_and_patients_kept_whole():
    films = read_lung_films(LUNG_MASKS)
    assert len(select(films, "kermany", "test")) == 623 and len(select(films, "ieee8023", "test")) == 72
    assert len(select(films, "ieee8023", "lateral")) == 22 and all(f.mask == "" for f in select(films, "ieee8023",
                                                                                                  "lateral"))
    train, val = validation_split(select(films, "kermany", "train") + select(films, "ieee8023", "train"), 0.08)
    assert not {f.patient for f in train} & {f.patient for f in val} and 0.04 < len(val) / len(train) < 0.14

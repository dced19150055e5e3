"""Tests of anatomy: a segmenter trained on phantoms with drawn lungs finds them, saves, exports with parity
and segments from the CLI; the scores ignore the masks' "ignore" pixels; the shared lung masks are read. A
classifier that draws the lungs gives the same lung numbers through the CLI, the Python API, the server and its
ONNX export, refuses a film with one lung field, and its review measures the heatmaps against the lungs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from tests.conftest import SHARED, one_lung_film

from pneumoscan.anatomy.masks import IGNORED, read_lung_films, select, validation_split
from pneumoscan.anatomy.regions import lung_regions
from pneumoscan.anatomy.scores import film_scores, summary
from pneumoscan.anatomy.segmenter import load_segmenter
from pneumoscan.cli import main
from pneumoscan.data.synthetic import phantom_with_lungs

LUNG_MASKS = SHARED / "data" / "lung_masks"


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


def _films(folder, count: int = 4):
    """``count`` phantom films with lungs and one with a single lung field, as PNG files."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    films = [phantom_with_lungs(rng, pneumonia=bool(i % 2), size=64) for i in range(count)]
    paths = []
    for i, film in enumerate([*[f for f, _ in films], one_lung_film(*films[0])]):
        paths.append(folder / (f"film{i}.png" if i < count else "one_lung.png"))
        Image.fromarray((np.clip(film, 0, 1) * 255).astype(np.uint8)).save(paths[-1])
    return paths


def test_the_cli_the_python_api_the_server_and_the_export_give_the_same_lung_numbers(lung_model, tmp_path):
    from fastapi.testclient import TestClient

    from pneumoscan.inference.screen import load
    from pneumoscan.serve import create_app

    paths = _films(tmp_path / "films")
    assert main(["predict", str(lung_model), *map(str, paths), "--out", str(tmp_path / "p.csv")]) == 0
    cli = {r["path"]: r for r in csv.DictReader((tmp_path / "p.csv").open())}
    api = {s.source: s for s in load(lung_model).screen([str(p) for p in paths], heatmaps=True)}
    client = TestClient(create_app(lung_model))
    scored = [p for p in paths if api[str(p)].scored]
    assert len(scored) == 4

    def number(text):  # the CSV's empty cell is no number (an empty heatmap has no heat to place)
        return float(text) if text else None

    # 1e-6: the server screens one image at a time and the CLI five, which moves float noise

    for path in scored:
        screening = api[str(path)]
        assert 0.05 < screening.lung_area_fraction < 0.6
        assert screening.lungs.shape == screening.heatmap.shape and screening.lungs.any()
        assert number(cli[str(path)]["heat_in_lungs"]) == pytest.approx(screening.heat_in_lungs, abs=1e-6)
        assert float(cli[str(path)]["lung_area_fraction"]) == pytest.approx(screening.lung_area_fraction, abs=1e-6)
        upload = {"file": (path.name, path.read_bytes(), "image/png")}
        body = client.post("/v1/predict?heatmap=true", files=upload).json()
        assert body["heat_in_lungs"] == pytest.approx(screening.heat_in_lungs, abs=1e-6)
        assert body["lungs_png"].startswith("data:image/png;base64,")
    measured = [api[str(p)].heat_in_lungs for p in scored if api[str(p)].heat_in_lungs is not None]
    assert measured and all(0 <= h <= 1 for h in measured)
    assert main(["export", str(lung_model), "--out", str(tmp_path / "onnx")]) == 0
    exported = {s.source: s for s in load(tmp_path / "onnx" / "model.onnx").screen([str(p) for p in paths])}
    for path in scored:
        assert exported[str(path)].lung_area_fraction == pytest.approx(api[str(path)].lung_area_fraction, abs=0.01)
        if api[str(path)].heat_in_lungs is not None:
            assert exported[str(path)].heat_in_lungs == pytest.approx(api[str(path)].heat_in_lungs, abs=0.02)


def test_a_film_with_one_lung_field_is_refused_as_not_frontal(lung_model, tmp_path):
    from fastapi.testclient import TestClient

    from pneumoscan.inference.screen import load
    from pneumoscan.serve import create_app

    lateral = _films(tmp_path / "films", count=1)[-1]
    screening = load(lung_model).screen_one(str(lateral))
    assert screening.status == "refused" and "not a frontal chest X-ray" in screening.reason
    answer = TestClient(create_app(lung_model)).post("/v1/predict", files={"file": (lateral.name, lateral.read_bytes(),
                                                                                    "image/png")})
    assert answer.status_code == 422 and "not a frontal chest X-ray" in answer.json()["detail"]


def test_the_anatomy_review_measures_heat_in_the_lungs_by_case(lung_model, phantom_root, tmp_path):
    code = main(["explain", "--model", str(lung_model), "--review", "test", "--data", str(phantom_root), "--anatomy",
                 "--confident", "1", "--out", str(tmp_path / "review")])
    assert code == 0
    summary = json.loads((tmp_path / "review" / "anatomy.json").read_text())["gradcam"]
    rows = list(csv.DictReader((tmp_path / "review" / "anatomy.csv").open()))
    assert summary["all"]["images"] == len(rows) > 0
    assert {r["case"] for r in rows} <= {"true_positive", "false_positive", "true_negative", "false_negative"}
    assert sum(summary[case]["images"] for case in ("true_positive", "false_positive", "true_negative",
                                                     "false_negative")) == len(rows)
    heat = summary["all"]["heat_in_lungs"]
    assert heat["ci95"][0] <= heat["mean"] <= heat["ci95"][1]
    assert all(r["lungs"] == "segmenter" for r in rows)


def test_focus_numbers_of_a_map_inside_and_outside_the_lungs():
    from pneumoscan.anatomy.focus import focus

    lungs = np.zeros((50, 50), bool)
    lungs[10:40, 10:25] = True
    inside = lungs.astype(float)
    corner = np.zeros((50, 50))
    corner[:4, :4] = 1.0  # inside the top-left corner square and the border strip (4 px of 50)
    assert focus(inside, lungs).heat_in_lungs == 1.0 and focus(inside, lungs).peak_in_lungs
    outside = focus(corner, lungs)
    assert outside.heat_in_lungs == 0.0 and outside.corners == 1.0 and outside.border == 1.0
    assert focus(np.zeros((50, 50)), lungs) is None
    assert focus(inside, lungs).chance == pytest.approx(lungs.mean())

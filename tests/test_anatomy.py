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


def test_the_crop_front_zooms_to_the_lung_field_and_maps_heatmaps_back(lung_run):
    import torch

    from pneumoscan.anatomy.front import LungFront, crop_box

    field = torch.zeros(1, 1, 20, 20)
    field[0, 0, 5:10, 8:16] = 1  # rows 5-9, columns 8-15; the 5% margin adds a pixel on every side
    box = crop_box(field)
    assert box[0].flatten().tolist() == pytest.approx([0.5, 0.0, 0.2, 0.0, 0.35, -0.25])
    assert crop_box(torch.zeros(1, 1, 20, 20))[0].tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # no lungs: all

    segmenter = load_segmenter(lung_run)
    front = LungFront(segmenter.net, segmenter.settings.image_size, "crop", 0.5, 0.25)
    film, lungs = phantom_with_lungs(np.random.default_rng(3), size=64)
    images = torch.from_numpy((film - 0.5) / 0.25).float()[None, None].repeat(1, 3, 1, 1)
    found = front.field(images)
    assert found[0, 0][lungs].float().mean() > 0.8 and found[0, 0][~lungs].float().mean() < 0.1
    view = front.view(images, found)
    assert view.shape == images.shape and view.std() > 0
    placed = front.on_input(torch.ones(1, 1, 64, 64), found)[0, 0]  # a map that is 1 everywhere on the crop
    assert placed[lungs].mean() > 0.99  # covers the lungs
    assert placed[0, 0] == 0 and placed[-1, -1] == 0  # and not the corners outside the box


def test_the_mask_front_keeps_the_lungs_and_greys_out_the_rest(lung_run):
    import torch

    from pneumoscan.anatomy.front import LungFront
    from pneumoscan.cache import module_fingerprint
    from pneumoscan.models.networks import build_model

    segmenter = load_segmenter(lung_run)
    front = LungFront(segmenter.net, segmenter.settings.image_size, "mask", 0.5, 0.25)
    film, lungs = phantom_with_lungs(np.random.default_rng(4), size=64)
    images = torch.from_numpy((film - 0.5) / 0.25).float()[None, None]
    view = front(images)[0, 0].numpy()
    assert np.allclose(view[lungs], images[0, 0].numpy()[lungs])
    assert (view[0, :] == 0).all() and (view[:, 0] == 0).all()  # the border is far from the lungs: the mean grey

    from pneumoscan.anatomy.segmenter import segmenter_state
    state = segmenter_state(segmenter)
    prints = {lungs: module_fingerprint(build_model("baseline_cnn", lungs=lungs, segmenter=state).trunk)
              for lungs in ("none", "crop", "mask")}
    assert len(set(prints.values())) == 3  # an activation cache never mixes what the trunk saw
    with pytest.raises(ValueError, match="segmenter"):
        build_model("baseline_cnn", lungs="crop")


@pytest.mark.parametrize("lungs", ["crop", "mask"])
def test_a_model_trained_on_the_lung_field_screens_alike_everywhere(lungs, phantom_root, lung_run, tmp_path):
    from pneumoscan.inference.screen import load
    from pneumoscan.models.checkpoint import attach_segmenter

    run = tmp_path / "run"
    args = ["train", "--data", str(phantom_root), "--out", str(run), "--model", "baseline_cnn", "--set",
            "image_size=64", "full.epochs=1", "batch_size=16", "workers=0", "n_boot=20", "val_fraction=0.25",
            "shift_report=false", f"cache_dir={tmp_path / 'cache'}", f"segmenter={lung_run}", f"lungs={lungs}"]
    assert main(args) == 0
    paths = _films(tmp_path / "films")
    screener = load(run)
    assert screener.description.arch_kwargs["lungs"] == lungs and screener.draws_lungs
    assert f"(lungs={lungs})" in "\n".join(screener.description.summary_lines())
    api = {s.source: s for s in screener.screen([str(p) for p in paths], heatmaps=True)}
    scored = [p for p in paths if api[str(p)].scored]
    assert scored
    assert main(["export", str(run), "--out", str(tmp_path / "onnx")]) == 0
    exported = {s.source: s for s in load(tmp_path / "onnx" / "model.onnx").screen([str(p) for p in paths],
                                                                                   heatmaps=True)}
    for path in scored:
        assert exported[str(path)].probability == pytest.approx(api[str(path)].probability, abs=1e-4)
        assert np.abs(exported[str(path)].heatmap - api[str(path)].heatmap).max() < 0.02
        if lungs == "crop":  # the map lies in the crop: nothing on the film's corners
            assert api[str(path)].heatmap[0, 0] == 0
    import torch

    from pneumoscan.data.io import load_image
    from pneumoscan.explain.gradcam import gradcam
    from pneumoscan.models.checkpoint import load_model

    images = torch.stack([screener.preprocessing.to_tensor(load_image(p)) for p in scored])
    explained = torch.tensor([screener.classes.index(api[str(p)].explained) for p in scored])
    drawn = gradcam(load_model(run).model, images, explained=explained).heatmaps  # the explain path (autograd)
    assert np.abs(drawn - np.stack([api[str(p)].heatmap for p in scored])).max() < 1e-3
    with pytest.raises(ValueError, match="cannot be replaced"):
        attach_segmenter(run, lung_run)

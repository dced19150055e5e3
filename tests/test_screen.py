"""Tests of inference.screen: one decision per file whichever entry point asks, in order, past broken files."""

from __future__ import annotations

import csv
import mimetypes

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.hostile import write_hostile_folder

import pneumoscan
from pneumoscan.cli import main
from pneumoscan.data import expand_inputs
from pneumoscan.inference.screen import REFUSED, SCORED, UNREADABLE

EXPECTED = {"xray": SCORED, "broken": UNREADABLE, "not_xray": REFUSED}


@pytest.fixture(scope="module")
def hostile(tiny_run, phantom_root, tmp_path_factory):
    xray = sorted((phantom_root / "test" / "PNEUMONIA").iterdir())[0]
    folder = tmp_path_factory.mktemp("hostile")
    return folder, write_hostile_folder(folder, xray)


def _server_outcomes(app, paths):
    client = TestClient(app)
    outcomes = []
    for path in paths:
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        response = client.post("/v1/predict", files={"file": (path.split("/")[-1], open(path, "rb").read(),
                                                              content_type)})
        body = response.json()
        outcomes.append((body["status"], body.get("probability")))
        assert (response.status_code == 200) == (body["status"] == SCORED), body
    return outcomes


def test_cli_python_api_and_server_agree_on_a_hostile_folder(tiny_run, hostile, tmp_path):
    from pneumoscan.serve import create_app

    folder, kinds = hostile
    paths = expand_inputs([folder])
    assert len(paths) >= 25 and set(kinds.values()) == set(EXPECTED)
    api = [(r.status, r.probability) for r in pneumoscan.load(tiny_run).screen(paths)]
    out = tmp_path / "cli.csv"
    assert main(["predict", str(tiny_run), str(folder), "--out", str(out)]) == 1  # broken files
    rows = list(csv.DictReader(out.open()))
    cli = [(r["status"], float(r["probability"]) if r["probability"] else None) for r in rows]
    server = _server_outcomes(create_app(tiny_run), paths)
    assert [r["path"] for r in rows] == paths
    for path, a, c, s in zip(paths, api, cli, server):
        assert a[0] == c[0] == s[0], path
        if a[0] == SCORED:
            assert a[1] == pytest.approx(c[1], abs=1e-6) and a[1] == pytest.approx(s[1], abs=1e-6), path
        else:
            assert a[1] is None and c[1] is None and s[1] is None, path


def test_hostile_folder_gets_the_right_answers(tiny_run, hostile):
    folder, kinds = hostile
    results = {r.source.split("/")[-1]: r for r in pneumoscan.load(tiny_run).screen(expand_inputs([folder]))}
    for name, kind in kinds.items():
        assert results[name].status == EXPECTED[kind], (name, results[name].reason)
        assert results[name].scored or results[name].reason
    assert "blank" in results["black.png"].reason and "colour image" in results["photo_chelsea_colour.jpg"].reason
    assert "does not look like a chest X-ray" in results["document.png"].reason


def test_exported_model_screens_like_the_run(tiny_run, hostile, tmp_path):
    from pneumoscan.export.files import export_run

    folder, _ = hostile
    export_run(tiny_run, tmp_path)
    paths = expand_inputs([folder])
    run, onnx = pneumoscan.load(tiny_run).screen(paths), pneumoscan.load(tmp_path / "model.onnx").screen(paths)
    assert [r.status for r in run] == [r.status for r in onnx]
    np.testing.assert_allclose([r.probability for r in run if r.scored], [r.probability for r in onnx if r.scored],
                               atol=1e-4)


def test_results_keep_input_order_with_uploads_and_heatmaps(tiny_run, phantom_root, tmp_path):
    paths = expand_inputs([phantom_root / "test"])[:5]
    screener = pneumoscan.load(tiny_run)
    missing = str(tmp_path / "missing.png")
    upload = ("upload.jpeg", open(paths[0], "rb").read())
    results = screener.screen(paths[:2] + [missing, upload] + paths[2:], batch_size=2, heatmaps=True)
    assert [r.source for r in results] == paths[:2] + [missing, "upload.jpeg"] + paths[2:]
    assert results[2].status == UNREADABLE and "no such file" in results[2].reason and results[2].probability is None
    assert results[3].probability == pytest.approx(results[0].probability, abs=1e-6)
    for r in results[:2] + results[3:]:
        assert r.scored and set(r.probabilities) == {"NORMAL", "PNEUMONIA"}
        assert r.probability == r.probabilities["PNEUMONIA"] and sum(r.probabilities.values()) == pytest.approx(1)
        assert r.label == ("PNEUMONIA" if r.probability >= screener.threshold else "NORMAL")
        assert r.heatmap.shape == r.image.shape == (64, 64)


def test_an_image_unlike_the_training_population_is_scored_and_flagged(tiny_run, phantom_root):
    from PIL import Image

    screener = pneumoscan.load(tiny_run)
    limits = screener.limits
    xray = np.asarray(Image.open(expand_inputs([phantom_root / "test"])[0]), np.float32) / 255
    screener.limits = {**limits, "shift_threshold": -1.0}  # every image is now unlike the training data
    result = screener.screen_one(("x.png", _png(xray)))
    assert result.scored and result.flagged and "less reliable" in result.warning
    screener.limits = {**limits, "shift_threshold": float("inf")}
    assert not screener.screen_one(("x.png", _png(xray))).flagged


def _png(gray: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((gray * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_screening_a_loaded_model_leaves_the_callers_modules_as_they_were(tiny_run, phantom_root):
    import torch

    from pneumoscan.models.checkpoint import load_model

    loaded = load_model(tiny_run)
    before = {name: p.is_contiguous() for name, p in loaded.model.named_parameters()}
    result = pneumoscan.load(loaded).screen_one(expand_inputs([phantom_root / "test"])[0])
    assert result.scored
    assert {name: p.is_contiguous() for name, p in loaded.model.named_parameters()} == before
    assert all(p.is_contiguous(memory_format=torch.contiguous_format) for p in loaded.model.parameters())


def test_screen_takes_one_path_a_folder_a_csv_or_a_list_and_finds_images_by_content(tiny_run, phantom_root, tmp_path):
    from tests.hostile import dicom_bytes

    from pneumoscan.data.io import load_image

    folder = tmp_path / "pacs_export"
    (folder / "series").mkdir(parents=True)
    images = sorted((phantom_root / "test" / "NORMAL").iterdir())[:2]
    (folder / "one.jpeg").write_bytes(images[0].read_bytes())
    (folder / "series" / "1.2.840.113619.2.55").write_bytes(  # a DICOM file named by its UID, no suffix
        dicom_bytes(np.asarray(load_image(images[1]) * 4095, np.uint16), "MONOCHROME2"))
    (folder / "notes").write_text("not an image, whatever its name")
    listing = tmp_path / "list.csv"
    listing.write_text(f"path\n{images[0]}\n{images[1]}\n")
    screener = pneumoscan.load(tiny_run)
    from_folder = screener.screen(folder, progress=False)
    assert [r.source for r in from_folder] == [str(folder / "one.jpeg"), str(folder / "series" / "1.2.840.113619.2.55")]
    assert all(r.status != UNREADABLE for r in from_folder)
    assert [r.source for r in screener.screen(str(images[0]), progress=False)] == [str(images[0])]
    assert [r.source for r in screener.screen(listing, progress=False)] == [str(images[0]), str(images[1])]
    mixed = screener.screen([folder, images[0]], progress=False)
    assert len(mixed) == 3 and mixed[2].source == str(images[0])
    assert expand_inputs([folder]) == [r.source for r in from_folder]  # the CLI finds the same files


def test_loading_a_file_that_is_not_a_model_says_so(phantom_root):
    image = next((phantom_root / "test" / "NORMAL").iterdir())
    with pytest.raises(ValueError, match="not a pneumoscan model"):
        pneumoscan.load(image)

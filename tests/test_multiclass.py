"""Tests of N-class tasks: class names from the data, a tiny 3-class dataset trained, evaluated,
explained, exported and served end to end, multi-class metrics, and duplicate grouping."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from tests.conftest import LIGHT_CHECKS

from pneumoscan.data.duplicates import duplicate_groups, duplicates_of
from pneumoscan.data.labels import DEFAULT_TASK, class_map
from pneumoscan.data.records import load_samples, task_classes
from pneumoscan.data.split import patient_split
from pneumoscan.data.tasks import TaskSettings
from pneumoscan.evaluate.multiclass import multiclass_metrics, paired_comparison
from pneumoscan.inference.screen import load
from pneumoscan.input_checks.checks import InputCheckSettings
from pneumoscan.models.checkpoint import load_model
from pneumoscan.train import TrainConfig, train
from pneumoscan.train.config import FullStage
from pneumoscan.train.setup import grouped_by_duplicates

SHAPES = ("bars", "circle", "cross")


def _picture(kind: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A textured grey background with a bright shape that names the class, at a random place."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = 0.35 + 0.1 * np.sin(8 * x + rng.uniform(0, 6)) + rng.normal(0, 0.04, (size, size))
    cx, cy = rng.uniform(0.3, 0.7, 2)
    if kind == "bars":
        image[(np.abs(y - cy) < 0.05) & (np.abs(x - cx) < 0.25)] += 0.4
    elif kind == "circle":
        image[np.hypot(x - cx, y - cy) < 0.15] += 0.4
    else:
        image[((np.abs(x - cx) < 0.04) | (np.abs(y - cy) < 0.04)) & (np.hypot(x - cx, y - cy) < 0.2)] += 0.4
    return np.clip(image, 0, 1)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 12)):
        for kind in SHAPES:
            (root / split / kind).mkdir(parents=True)
            for i in range(n):
                Image.fromarray((_picture(kind, rng) * 255).astype(np.uint8)).save(root / split / kind / f"{i}.png")
    return root


def test_class_names_come_from_the_folders_and_a_mapping_merges_them(shapes_root):
    assert task_classes(shapes_root).names == SHAPES
    merged = task_classes(shapes_root, "bars=0,circle=1,cross=1")
    assert merged.names == ("bars", "circle+cross") and merged.binary
    named = class_map(["notumor", "glioma", "pituitary"], "notumor=no tumour,glioma=tumour,pituitary=tumour")
    assert named.names == ("no tumour", "tumour") and named.index("glioma") == 1 and named.index("notumor") == 0
    assert class_map(["NORMAL", "PNEUMONIA"]) == DEFAULT_TASK
    assert {s.label for s in load_samples(shapes_root, "test", merged)} == {0, 1}
    with pytest.raises(ValueError, match="does not say where"):
        task_classes(shapes_root, "bars=0,circle=1")


def test_a_map_scaled_by_probability_is_dark_for_a_class_the_model_rules_out():
    import torch

    from pneumoscan.data import Preprocessing
    from pneumoscan.explain import gradcam
    from pneumoscan.models.networks import build_model

    torch.manual_seed(0)
    model = build_model("baseline_cnn", preprocessing=Preprocessing(image_size=64), outputs=3, width=4, blocks=3).eval()
    images = torch.randn(4, 3, 64, 64)
    predicted = gradcam(model, images, classes=SHAPES)
    assert predicted.probabilities.shape == (4, 3)
    np.testing.assert_array_equal(predicted.explained, predicted.probabilities.argmax(1))
    least = SHAPES[int(predicted.probabilities.mean(0).argmin())]
    plain = gradcam(model, images, classes=SHAPES, target=least)
    scaled = gradcam(model, images, classes=SHAPES, target=least, scale="probability")
    np.testing.assert_allclose(scaled.heatmaps, plain.heatmaps * plain.explained_probability()[:, None, None],
                               rtol=1e-5, atol=1e-6)
    assert scaled.heatmaps.max() <= plain.explained_probability().max() + 1e-6


def test_multiclass_metrics_and_paired_comparison():
    y = np.array([0, 0, 1, 1, 2, 2, 2, 1])
    good = np.eye(3)[y] * 0.7 + 0.1
    worse = good.copy()
    worse[[0, 4]] = np.eye(3)[[1, 0]] * 0.7 + 0.1  # two errors
    m = multiclass_metrics(y, good, ("a", "b", "c"))
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["confusion_matrix"][2] == [0, 0, 3]
    w = multiclass_metrics(y, worse, ("a", "b", "c"))
    assert w["accuracy"] == 0.75 and w["per_class"]["a"]["recall"] == 0.5 and w["balanced_accuracy"] < 0.8
    pair = paired_comparison(y, good, worse, n_boot=200)
    assert pair["accuracy_difference"] == 0.25 and pair["mcnemar"]["a_right_b_wrong"] == 2


def test_tiny_three_class_run_trains_evaluates_explains_exports_and_serves(shapes_root, tmp_path):
    (shapes_root / "task.json").write_text(json.dumps({"population": "drawn shapes", "display": {"bars": "stripes"}}))
    config = TrainConfig(data=str(shapes_root), out=str(tmp_path / "run"), model="baseline_cnn", image_size=64,
                         batch_size=16, workers=0, n_boot=50, val_fraction=0.25,
                         cache_dir=str(tmp_path / "cache"), patience=8,
                         input_checks=InputCheckSettings(**LIGHT_CHECKS), task=TaskSettings(modality="shape picture"),
                         full=FullStage(epochs=8, lr=3e-3))
    run = train(config)
    (shapes_root / "task.json").unlink()
    described = load_model(run).description  # words from the settings, task.json and the data, metrics from the run
    assert (described.modality, described.population, described.display["bars"]) == ("shape picture",
                                                                                      "drawn shapes", "stripes")
    assert described.task == "bars vs circle vs cross" and described.metrics["test"]["accuracy"]["value"] > 0.6
    assert described.input_checks["fitted_on"]["training_images"] > 0
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]["at_argmax"]
    assert metrics["classes"] == list(SHAPES) and len(test["confusion_matrix"]) == 3
    assert test["accuracy"] > 0.6 and set(test["per_class"]) == set(SHAPES)
    assert (run / "plots" / "confusion_test.png").exists() and (run / "plots" / "roc_test.png").exists()
    loaded = load_model(run)
    assert loaded.classes.names == SHAPES and loaded.model.head[6].out_features == 3

    paths = [str(p) for p in sorted((shapes_root / "test" / "circle").glob("*.png"))[:4]]
    results = load(run).screen(paths, heatmaps=True)
    assert all(set(r.probabilities) == set(SHAPES) for r in results)
    assert all(abs(sum(r.probabilities.values()) - 1) < 1e-5 for r in results)
    assert all(r.label == max(r.probabilities, key=r.probabilities.get) and r.threshold is None for r in results)
    assert all(r.heatmap.shape == (64, 64) for r in results)

    from pneumoscan.cli import main

    assert main(["explain", *paths, "--model", str(run), "--out", str(tmp_path / "why"), "--scale", "probability"]) == 0
    rows = (tmp_path / "why" / "explanations.csv").read_text()
    assert "circle" in rows and all(label in SHAPES for label in [r.label for r in results])
    assert main(["explain", paths[0], "--model", str(run), "--out", str(tmp_path / "why_cross"), "--target",
                 "cross"]) == 0 and ",cross," in (tmp_path / "why_cross" / "explanations.csv").read_text()
    assert main(["explain", "--model", str(run), "--review", "test", "--data", str(shapes_root), "--out",
                 str(tmp_path / "review"), "--confident", "2"]) == 0
    assert {p.name for p in (tmp_path / "review").iterdir()} >= {"index.html", "correct_circle", "errors_circle"}

    from pneumoscan.export.files import export_run

    card = export_run(run, tmp_path / "export", parity_paths=paths)
    assert card["onnx_parity"]["outcome_mismatches"] == 0 and card["onnx_parity"]["prob_max_abs_diff"] < 1e-4
    exported = load(tmp_path / "export" / "model.onnx").screen(paths, heatmaps=True)
    assert [r.label for r in exported] == [r.label for r in results]

    from fastapi.testclient import TestClient

    from pneumoscan.serve import create_app

    client = TestClient(create_app(str(tmp_path / "export" / "model.onnx")))
    with open(paths[0], "rb") as handle:
        answer = client.post("/v1/predict", files={"file": ("x.png", handle, "image/png")}).json()
    assert set(answer["probabilities"]) == set(SHAPES) and answer["label"] == exported[0].label


def test_duplicate_groups_find_planted_copies_and_the_split_keeps_them_whole(tmp_path):
    rng = np.random.default_rng(1)
    originals = [_picture(SHAPES[i % 3], rng, size=96) for i in range(24)]
    paths = []
    for i, image in enumerate(originals):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    exact = tmp_path / "exact_copy_of_3.png"
    exact.write_bytes(open(paths[3], "rb").read())
    near = tmp_path / "near_copy_of_7.jpg"  # re-encoded and resized: a near duplicate
    Image.fromarray((originals[7] * 255).astype(np.uint8)).resize((80, 80)).save(near, quality=70)
    all_paths = paths + [str(exact), str(near)]
    groups = duplicate_groups(all_paths)
    assert groups[-2] == groups[3] and groups[-1] == groups[7]
    assert len(set(groups)) == 24  # nothing else joined
    found = duplicates_of([str(exact), str(near), paths[0]], paths[1:])
    assert found == {0: "exact", 1: "near"}

    from pneumoscan.data.samples import Sample

    samples = grouped_by_duplicates([Sample(p, 0, f"file{i}") for i, p in enumerate(all_paths)])
    for seed in range(5):
        train, val = patient_split(samples, val_fraction=0.3, seed=seed)
        for group in (groups[3], groups[7]):
            members = {all_paths[i] for i, g in enumerate(groups) if g == group}
            sides = {"train" if s.path in {t.path for t in train} else "val" for s in samples if s.path in members}
            assert len(sides) == 1



def test_two_models_compared_on_three_classes_get_multiclass_metrics_and_paired_tests(shapes_root, tmp_path):
    from pneumoscan.studies.compare import CompareConfig, compare

    settings = tmp_path / "tiny.json"
    settings.write_text(json.dumps({"image_size": 64, "full": {"epochs": 3, "lr": 3e-3}, "batch_size": 16,
                                    "workers": 0, "n_boot": 30, "val_fraction": 0.25, "shift_report": False,
                                    "stages": ["full"], "patience": 3}))
    config = CompareConfig(data=str(shapes_root), out=str(tmp_path / "cmp"), models=("baseline_cnn", "densenet121"),
                           weights=("densenet121=none",), base_config=str(settings), cache_dir=str(tmp_path / "cache"))
    result = compare(config)
    assert result["metrics"] == ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auc"]
    for model in config.models:
        run = json.loads((tmp_path / "cmp" / model / "seed0" / "metrics.json").read_text())["test"]["at_argmax"]
        assert result["models"][model]["macro_f1"]["values"] == [run["macro_f1"]]  # the run's own test metrics
    pair = result["pairs"]["baseline_cnn_vs_densenet121"]
    low, high = pair["accuracy_difference_ci95_per_seed"][0]
    assert 0 <= pair["mcnemar_p"] <= 1 and low <= pair["accuracy_difference_per_seed"][0] <= high
    lines = (tmp_path / "cmp" / "comparison.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    assert "| macro-F1 |" in header and "| AUC |" not in header and any("accuracy difference" in x for x in lines)


def test_a_three_class_study_tunes_on_validation_accuracy_and_label_smoothing(shapes_root, tmp_path):
    from pneumoscan.settings import load_settings
    from pneumoscan.studies.tune import TuneConfig, tune

    base = tmp_path / "base.json"
    base.write_text(json.dumps({"image_size": 64, "train_views": 1, "batch_size": 16, "workers": 0, "n_boot": 30,
                                "val_fraction": 0.25, "shift_report": False, "shift_images": 8}))
    summary = tune(TuneConfig(data=str(shapes_root), out=str(tmp_path / "study"), base_config=str(base),
                              weights="none", trials=2, head_epochs=2, tail_epochs=1,
                              cache_dir=str(tmp_path / "cache")))
    assert summary["objective"] == "val_shifts_accuracy" and "val_auc" not in summary
    assert 0 < summary["best_value"] <= 1 and "label_smoothing" in summary["best_params"]
    assert "pos_weight_scale" not in summary["best_params"]
    best = load_settings(TrainConfig, file=summary["best_config"])
    assert best.label_smoothing == pytest.approx(summary["best_params"]["label_smoothing"])
    trial = json.loads((tmp_path / "study" / "trials" / "trial_0000" / "history.json").read_text())
    assert {"val_accuracy", "val_auc"} <= set(trial[0])


def test_the_pooled_validation_score_reads_one_logit_or_a_row_of_class_logits():
    from pneumoscan.studies.tune import pooled_validation_score

    labels = np.array([0, 1, 2])
    rows = np.eye(3) * 4  # every clean image right
    shifted = np.stack([np.eye(3) * 4, np.roll(np.eye(3), 1, axis=1) * 4], axis=1)  # one copy right, one wrong
    logits = {"labels": labels, "clean": rows, "shift_labels": labels, "shifted": shifted}
    assert pooled_validation_score(logits, "accuracy") == pytest.approx(6 / 9)
    binary = {"labels": np.array([0, 1]), "clean": np.array([-1.0, 2.0]), "shift_labels": np.array([0, 1]),
              "shifted": np.array([[1.5], [1.0]])}
    assert pooled_validation_score(binary, "accuracy") == pytest.approx(3 / 4)
    assert pooled_validation_score(binary, "auc") == pytest.approx(0.75)


def test_a_binary_run_with_its_own_class_names_is_compared_on_its_own_labels(shapes_root, tmp_path):
    from pneumoscan.studies.compare import run_one

    config = TrainConfig(data=str(shapes_root), out=str(tmp_path / "run"), model="baseline_cnn",
                         classes="bars=0,circle=1,cross=1", image_size=64, stages=("full",), batch_size=16, workers=0,
                         n_boot=30, val_fraction=0.25, patience=2, shift_report=False,
                         cache_dir=str(tmp_path / "cache"), full=FullStage(epochs=2, lr=3e-3))
    summary = run_one(config)
    assert len(summary["y"]) == 36 and summary["y"].sum() == 24  # circles and crosses of the test split
    run = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["at_threshold"]
    assert summary["accuracy"] == run["accuracy"]
    assert summary["called"].tolist() == (summary["prob"] >= summary["threshold"]).astype(int).tolist()

"""Tests of pneumoscan.explain: every method on every model, parity, targets, edge cases, outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

from pneumoscan.data import Preprocessing, scan_kaggle_split
from pneumoscan.explain import METHODS, explain, gradcam
from pneumoscan.explain.checks import (
    border_mass,
    box_iou,
    cascading_randomization,
    center_maps,
    deletion_insertion,
    explained_probability,
    pointing_game,
    random_maps,
)
from pneumoscan.explain.run import explain_files, review_cases
from pneumoscan.inference.heatmaps import ClosedFormGradCAM
from pneumoscan.models.checkpoint import LoadedModel
from pneumoscan.models.networks import MODELS, build_model

SMALL = Preprocessing(image_size=64)


def small_model(name: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return build_model(name, preprocessing=SMALL, **kwargs).eval()


@pytest.fixture(scope="module")
def batch():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_model_gives_unit_maps_and_leaves_no_hooks(name, method, batch):
    model = small_model(name)
    result = explain(model, batch, method=method)
    assert result.heatmaps.shape == (2, 64, 64) and result.heatmaps.dtype == np.float32
    assert np.isfinite(result.heatmaps).all()
    assert result.heatmaps.min() >= 0 and result.heatmaps.max() <= 1 + 1e-6
    assert result.probabilities.shape == (2,)
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks, f"hook left on {module}"


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("category", [1, 0])
def test_fast_gradcam_equals_pytorch_grad_cam(name, category, batch):
    model = small_model(name)
    ours = gradcam(model, batch, target="pneumonia" if category else "normal").heatmaps
    with GradCAM(model=model, target_layers=[model.tail]) as cam:
        reference = cam(input_tensor=batch, targets=[BinaryClassifierOutputTarget(category)] * 2)
    assert np.abs(ours - reference).max() <= 1e-4


def test_normal_target_negates_the_logit(batch):
    model = small_model("densenet121")
    pneumonia, normal = gradcam(model, batch, target="pneumonia"), gradcam(model, batch, target="normal")
    assert (pneumonia.signs == 1).all() and (normal.signs == -1).all()
    assert not np.allclose(pneumonia.heatmaps, normal.heatmaps)
    predicted = gradcam(model, batch, target="predicted", threshold=0.5)
    np.testing.assert_array_equal(predicted.signs, np.where(predicted.probabilities >= 0.5, 1, -1))


def test_batch_equals_single_images():
    model = small_model("resnet50")
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    together = gradcam(model, images).heatmaps
    alone = np.concatenate([gradcam(model, images[i:i + 1]).heatmaps for i in range(4)])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_all_negative_evidence_gives_zeros_not_nan(batch):
    model = small_model("baseline_cnn")
    with torch.no_grad():  # every feature (>= 0 after ReLU/pool) pushes the logit down
        model.head[3].weight.fill_(-0.01)
        model.head[3].bias.fill_(1.0)
        model.head[6].weight.fill_(1.0)
    for method in ("gradcam", "gradcam_reference"):
        result = explain(model, batch, method=method, target="pneumonia")
        assert result.empty.all()
        assert np.isfinite(result.heatmaps).all() and (result.heatmaps == 0).all()


@pytest.mark.parametrize("outputs", [1, 3])
def test_every_class_map_in_closed_form_matches_autograd(batch, outputs):
    model = small_model("densenet121", outputs=outputs)
    with torch.no_grad():
        fmap = model.feature_map(batch)
        logits, cams = ClosedFormGradCAM(model.head)(fmap)
    torch.testing.assert_close(logits, model(batch))
    fmap = fmap.clone().requires_grad_(True)
    scores = model.head(fmap).squeeze(1)
    per_class = [-scores, scores] if outputs == 1 else [scores[:, k] for k in range(outputs)]
    assert cams.shape == (len(batch), len(per_class), *fmap.shape[2:])
    for k, score in enumerate(per_class):
        (grads,) = torch.autograd.grad(score.sum(), fmap, retain_graph=True)
        expected = torch.relu((grads.mean((2, 3), keepdim=True) * fmap).sum(1))
        torch.testing.assert_close(cams[:, k], expected.detach(), rtol=1e-4, atol=1e-6)


def test_unknown_method_and_target_are_refused(batch):
    with pytest.raises(ValueError, match="gradcam"):
        explain(small_model("baseline_cnn"), batch, method="magic")
    with pytest.raises(ValueError, match="target"):
        explain(small_model("baseline_cnn"), batch, target="cats")


def test_randomizing_the_model_changes_gradcam(batch):
    curve = cascading_randomization(small_model("resnet50"), batch)
    assert curve[0]["block"] == "head" and sum(row["last_block"] for row in curve) == 1
    assert all(-1 <= row["rank_corr"] <= 1 for row in curve)


class TopLeftDetector(torch.nn.Module):
    """Three classes; the last one's logit grows with the brightness of the top-left quadrant."""

    def forward(self, images):
        evidence = images[:, 0, :32, :32].mean(dim=(1, 2))
        other = torch.zeros_like(evidence)
        return torch.stack([other, other, 24 * evidence - 18], dim=1)  # positive above a brightness of 0.75


def quadrant_map(rows: slice, cols: slice) -> np.ndarray:
    heatmap = np.zeros((1, 64, 64), np.float32)
    heatmap[0, rows, cols] = 1.0
    heatmap += np.linspace(0, 1e-3, 64 * 64, dtype=np.float32).reshape(1, 64, 64)  # no ties in the ranking
    return heatmap


def test_deleting_the_evidence_first_lowers_the_explained_class_probability_sooner():
    images = torch.zeros(1, 3, 64, 64)
    images[:, :, :32, :32] = 1.0
    on_evidence = deletion_insertion(TopLeftDetector(), images, quadrant_map(slice(0, 32), slice(0, 32)),
                                     np.array([2]), steps=8, precision="fp32")
    elsewhere = deletion_insertion(TopLeftDetector(), images, quadrant_map(slice(32, 64), slice(32, 64)),
                                   np.array([2]), steps=8, precision="fp32")
    assert on_evidence["deletion_auc"][0] < elsewhere["deletion_auc"][0] - 0.2
    assert on_evidence["insertion_auc"][0] > elsewhere["insertion_auc"][0] + 0.2


def test_a_one_logit_model_explains_either_class_by_its_probability():
    model = small_model("baseline_cnn")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        positive = torch.sigmoid(model(images)).numpy()
    explained = explained_probability(model, images, torch.tensor([1, 0]))
    assert explained == pytest.approx([positive[0], 1 - positive[1]], abs=1e-6)


def test_localization_measures_on_known_maps():
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[10:20, 30:40] = 1.0
    assert pointing_game(heatmap, [(30, 10, 39, 19)], tolerance=0)
    assert not pointing_game(heatmap, [(0, 40, 10, 50)], tolerance=0)
    assert box_iou(heatmap, [(30, 10, 39, 19)]) == pytest.approx(1.0)
    assert border_mass(np.ones((1, 100, 100)), band=0.1)[0] == pytest.approx(1 - 0.8**2)
    assert random_maps((2, 64, 64)).shape == center_maps((2, 64, 64)).shape == (2, 64, 64)


def test_review_picks_confident_hits_and_every_error():
    from pneumoscan.data import Sample

    samples = [Sample(f"{i}.png", label, str(i)) for i, label in enumerate([1, 1, 0, 0, 1, 0])]
    prob = np.array([0.99, 0.7, 0.01, 0.8, 0.2, 0.3])
    cases = review_cases(samples, prob, 0.5, confident=1)
    assert cases == {"true_positives": [0], "true_negatives": [2], "false_positives": [3], "false_negatives": [4]}


def test_explain_files_writes_panels_and_survives_a_broken_file(phantom_root, tmp_path):
    loaded = LoadedModel.of(small_model("baseline_cnn"), threshold=0.5)
    paths = [s.path for s in scan_kaggle_split(phantom_root, "test")[:3]]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    rows = explain_files(loaded, paths + [str(broken)], tmp_path / "out", save_arrays=True)
    assert [bool(r["error"]) for r in rows] == [False, False, False, True]
    assert len(list((tmp_path / "out").glob("*.png"))) == 3 and len(list((tmp_path / "out").glob("*.npy"))) == 3
    assert (tmp_path / "out" / "index.html").read_text().count("panel") >= 3


def test_explain_draws_the_map_the_screening_serves_for_the_class_it_decided(tiny_run, phantom_root, tmp_path):
    import pneumoscan
    from pneumoscan.data import scan_kaggle_split
    from pneumoscan.explain.run import explain_batches
    from pneumoscan.export.files import export_run
    from pneumoscan.models.checkpoint import load_model

    paths = [s.path for s in scan_kaggle_split(phantom_root, "test")]
    loaded = load_model(tiny_run)
    export_run(tiny_run, tmp_path / "onnx")
    served = {r.source: r for r in pneumoscan.load(tiny_run).screen(paths, heatmaps=True, progress=False)}
    exported = {r.source: r for r in pneumoscan.load(tmp_path / "onnx" / "model.onnx").screen(
        paths, heatmaps=True, progress=False)}
    explained = [item for item in explain_batches(loaded, paths) if not isinstance(item, tuple)]
    assert {item.label for item in explained} == {"NORMAL", "PNEUMONIA"}  # both decisions are explained
    for item in explained:
        screening = served[item.path]
        assert item.explained == item.label == screening.label == screening.explained
        np.testing.assert_array_equal(item.heatmap, screening.heatmap)
        assert exported[item.path].explained == item.explained
        np.testing.assert_allclose(exported[item.path].heatmap, item.heatmap, atol=1e-3)
    other = next(item for item in explained if item.label == "NORMAL")
    asked = next(explain_batches(loaded, [other.path], target="PNEUMONIA"))
    assert asked.explained == "PNEUMONIA" and asked.label == "NORMAL"
    assert np.abs(asked.heatmap - other.heatmap).max() > 0.1  # another class's evidence is another map

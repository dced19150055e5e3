"""Tests of pneumoscan.export and pneumoscan.inference.runtime: ONNX parity, metadata, model card, TorchScript."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pneumoscan.data import Preprocessing
from pneumoscan.export.files import ServingGraph, export_onnx, export_run, export_torchscript, quantize_openvino_int8
from pneumoscan.inference.runtime import OnnxModel, OpenVinoModel, TorchModel, load_runtime, openvino_core
from pneumoscan.input_checks.checks import InputChecks
from pneumoscan.input_checks.fitting import fit_gate, fit_logistic, fit_shift
from pneumoscan.models.checkpoint import LoadedModel, load_model
from pneumoscan.models.networks import MODELS, build_model

SMALL = Preprocessing(image_size=64)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_graph_matches_pytorch_for_every_model(name, tmp_path):
    torch.manual_seed(0)
    loaded = LoadedModel.of(build_model(name, preprocessing=SMALL).eval(), threshold=0.4, threshold_rule="youden")
    path = export_onnx(loaded, tmp_path / f"{name}.onnx")
    runtime, reference = OnnxModel(path), TorchModel(loaded)
    assert runtime.description.threshold == 0.4 and runtime.preprocessing == SMALL
    assert runtime.description.classes == ("NORMAL", "PNEUMONIA")
    for batch in (1, 5):  # dynamic batch size
        x = images(batch, seed=batch).numpy()
        got, expected = runtime.run(x), reference.run(x)
        assert got["probabilities"].shape == (batch, 2) and got["heatmaps"].shape == (batch, 2, 64, 64)
        assert got["shift_score"].shape == (batch,) and got["modality_probability"].shape == (batch,)
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-4)
        np.testing.assert_allclose(got["heatmaps"], expected["heatmaps"], atol=1e-3)
        np.testing.assert_allclose(got["probabilities"].sum(1), 1.0, atol=1e-6)


def test_openvino_runs_the_onnx_file_like_onnxruntime(tmp_path):

    torch.manual_seed(0)
    loaded = LoadedModel.of(build_model("densenet121", preprocessing=SMALL).eval(), threshold=0.4)
    path = export_onnx(loaded, tmp_path / "m.onnx")
    reference = OnnxModel(path)
    fp32, bf16 = OpenVinoModel(path, precision="fp32"), OpenVinoModel(path, precision="bf16")
    assert fp32.description.threshold == 0.4 and fp32.preprocessing == SMALL and fp32.precision == "fp32"
    bf16_capable = "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert bf16.precision == ("bf16" if bf16_capable else "fp32")  # what the CPU can do
    for batch in (1, 5):  # dynamic batch size
        x = images(batch, seed=batch).numpy()
        expected, got = reference.run(x), fp32.run(x)
        for name, tolerance in (("probabilities", 1e-4), ("heatmaps", 1e-3), ("shift_score", 1e-3),
                                ("modality_probability", 1e-4)):
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-3, atol=tolerance)
        low = bf16.run(x)
        assert np.abs(low["probabilities"] - expected["probabilities"]).max() < 0.05
        assert np.abs(low["heatmaps"] - expected["heatmaps"]).mean() < 0.05


def test_openvino_model_can_be_called_from_several_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    loaded = LoadedModel.of(build_model("baseline_cnn", preprocessing=SMALL).eval(), threshold=0.5)
    runtime = OpenVinoModel(export_onnx(loaded, tmp_path / "m.onnx"), precision="fp32")
    batches = [images(2, seed=k).numpy() for k in range(8)]
    alone = [runtime.run(x)["probabilities"] for x in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda x: runtime.run(x)["probabilities"], batches))
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("target", ["NORMAL", "PNEUMONIA"])
def test_exported_heatmaps_are_the_fast_gradcam_of_each_class(target):
    from pneumoscan.explain import gradcam

    torch.manual_seed(0)
    model = build_model("densenet121", preprocessing=SMALL).eval()
    with torch.no_grad():
        probabilities, heatmaps, _, _ = ServingGraph(model)(images(4))
    reference = gradcam(model, images(4), target=target)
    assert heatmaps.shape == (4, 2, 64, 64)
    np.testing.assert_allclose(heatmaps[:, ("NORMAL", "PNEUMONIA").index(target)].numpy(), reference.heatmaps,
                               atol=1e-5)
    np.testing.assert_allclose(probabilities[:, 1].numpy(), reference.probabilities, atol=1e-6)


def test_openvino_int8_model_keeps_outputs_and_metadata(tmp_path):
    torch.manual_seed(0)
    loaded = LoadedModel.of(build_model("baseline_cnn", preprocessing=SMALL).eval(), threshold=0.3)
    fp32 = export_onnx(loaded, tmp_path / "m.onnx")
    xml = quantize_openvino_int8(fp32, tmp_path / "m.int8.xml", images(16, seed=3).numpy())
    runtime = load_runtime(xml)  # an .xml goes to OpenVINO on its own
    assert runtime.runtime == "openvino" and runtime.description.threshold == 0.3 and runtime.preprocessing == SMALL
    got, reference = runtime.run(images(4).numpy()), OnnxModel(fp32).run(images(4).numpy())
    assert got["probabilities"].shape == (4, 2) and got["heatmaps"].shape == (4, 2, 64, 64)
    assert np.isfinite(got["heatmaps"]).all()
    assert np.abs(got["probabilities"] - reference["probabilities"]).max() < 0.05
    with pytest.raises(ValueError, match=r"\.xml"):
        quantize_openvino_int8(fp32, tmp_path / "m.int8.onnx", images(4).numpy())


@pytest.mark.parametrize("name", ["baseline_cnn", "densenet121"])
def test_input_checks_are_baked_into_the_graph(name, tmp_path):
    from pneumoscan.input_checks.checks import shift_layer_of

    torch.manual_seed(0)
    model = build_model(name, preprocessing=SMALL).eval()
    layer = shift_layer_of(model)
    assert layer == ("last" if name == "baseline_cnn" else "trunk")

    def shift_input(x):
        return (model.trunk(x) if layer == "trunk" else model.feature_map(x)).mean((2, 3))

    with torch.no_grad():
        features, shift_features = model.feature_map(images(64)).mean((2, 3)).numpy(), shift_input(images(64)).numpy()
    shift = fit_shift(shift_features[:48], shift_features[48:])
    shift.weight, shift.bias = fit_logistic(features[:16], features[16:], c=0.01)  # an other-population classifier
    shift.population_limit = 0.8
    checks = InputChecks(shift=shift, shift_layer=layer, gate=fit_gate(features[:32], features[32:]))
    path = export_onnx(LoadedModel.of(model, threshold=0.5, checks=checks), tmp_path / "m.onnx")
    got = OnnxModel(path).run(images(3, seed=9).numpy())
    with torch.no_grad():
        pooled = model.feature_map(images(3, seed=9)).mean((2, 3))
        np.testing.assert_allclose(got["shift_score"], checks.shift.score(shift_input(images(3, seed=9)), pooled),
                                   rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(got["modality_probability"], checks.gate.probability(pooled), atol=1e-5)
    limits = OnnxModel(path).description.input_checks
    assert limits["novelty_threshold"] == pytest.approx(checks.shift.threshold) and limits["gate_threshold"] == 0.5
    assert limits["shift_threshold"] == 1.0 and limits["other_population_classifier"]
    assert limits["population_limit"] == pytest.approx(0.8)


def test_export_run_writes_card_and_torchscript(tiny_run, phantom_root, tmp_path):
    from pneumoscan.data import scan_kaggle_split

    loaded = load_model(tiny_run)
    paths = [s.path for s in scan_kaggle_split(phantom_root, "test")[:6]]
    card = export_run(tiny_run, tmp_path / "onnx", parity_paths=paths)
    parity = card["onnx_parity"]
    assert parity["images"] == 6 and parity["outcome_mismatches"] == 0 and parity["prob_max_abs_diff"] <= 1e-4
    assert "## Input checks" in (tmp_path / "onnx" / "model.card.md").read_text()
    assert set(card["files"]) == {"model.onnx", "model.pt"}
    assert card["threshold"]["value"] == pytest.approx(loaded.threshold)
    low, high = card["threshold"]["ci95_over_validation_patients"]
    assert low <= card["threshold"]["value"] <= high
    assert card["test_metrics"]["auc"]["ci95"][0] <= card["test_metrics"]["auc"]["value"]
    assert json.loads((tmp_path / "onnx" / "model.card.json").read_text())["version"] == card["version"]
    assert "## Limitations" in (tmp_path / "onnx" / "model.card.md").read_text()
    assert "interval over validation patients" in (tmp_path / "onnx" / "model.card.md").read_text()

    path = export_torchscript(loaded, tmp_path / "model.ts")
    scripted = torch.jit.load(str(path))
    with torch.no_grad():
        ours = TorchModel(tiny_run).run(images(2).numpy())
        theirs = scripted(images(2))
    np.testing.assert_allclose(ours["probabilities"], theirs[0].numpy(), atol=1e-6)


def test_runtime_choice_and_bad_files(tiny_run, tmp_path):
    assert load_runtime(tiny_run).runtime == "pytorch"
    path = export_onnx(load_model(tiny_run), tmp_path / "m.onnx")
    assert load_runtime(path).runtime == "onnxruntime" and load_runtime(path, runtime="openvino").runtime == "openvino"
    with pytest.raises(ValueError, match="needs an exported .onnx"):
        load_runtime(tiny_run, runtime="openvino")
    with pytest.raises(ValueError, match="needs a run folder"):
        load_runtime(path, runtime="pytorch")
    with pytest.raises(ValueError, match="use one of"):
        load_runtime(path, runtime="tensorrt")
    with pytest.raises(FileNotFoundError):
        load_runtime(tmp_path / "absent.onnx")


def test_export_run_refuses_an_export_that_screens_differently(tiny_run, phantom_root, tmp_path, monkeypatch):
    from pneumoscan.data import scan_kaggle_split
    from pneumoscan.export import files as export_module

    paths = [s.path for s in scan_kaggle_split(phantom_root, "test")[:4]]
    monkeypatch.setattr(export_module, "parity_check", lambda *args: {
        "images": 4, "scored": 4, "outcome_mismatches": 1, "prob_max_abs_diff": 2e-4, "heatmap_max_abs_diff": 0.0})
    with pytest.raises(ValueError, match="prob_max_abs_diff 0.0002 > 0.0001, outcome_mismatches 1 > 0"):
        export_run(tiny_run, tmp_path / "onnx", parity_paths=paths)
    assert not (tmp_path / "onnx" / "model.onnx").exists() and not (tmp_path / "onnx" / "model.card.json").exists()

"""Tests of pneumoscan.export and pneumoscan.runtime: ONNX parity, metadata, model card, TorchScript."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pneumoscan.checkpoint import LoadedModel, load_model
from pneumoscan.data import Preprocessing
from pneumoscan.export import (
    ServingGraph,
    export_onnx,
    export_run,
    export_torchscript,
    parity_check,
    quantize_int8,
    quantize_openvino_int8,
)
from pneumoscan.models import MODELS, build_model
from pneumoscan.ood import fit_ood
from pneumoscan.runtime import OnnxModel, OpenVinoModel, TorchModel, load_runtime

SMALL = Preprocessing(image_size=64)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_graph_matches_pytorch_for_every_model(name, tmp_path):
    torch.manual_seed(0)
    loaded = LoadedModel(model=build_model(name, preprocessing=SMALL).eval(), threshold=0.4, threshold_rule="youden")
    path = export_onnx(loaded, tmp_path / f"{name}.onnx")
    parity = parity_check(loaded, path, images(8))
    assert parity["prob_max_abs_diff"] <= 1e-4 and parity["heatmap_max_abs_diff"] <= 1e-3
    runtime = OnnxModel(path)
    assert runtime.threshold == 0.4 and runtime.preprocessing == SMALL
    for batch in (1, 5):  # dynamic batch size
        prob, heatmap, ood = runtime.run(images(batch, seed=batch).numpy())
        assert prob.shape == (batch,) and heatmap.shape == (batch, 64, 64) and ood.shape == (batch,)


def test_openvino_runs_the_onnx_file_like_onnxruntime(tmp_path):
    import openvino as ov

    torch.manual_seed(0)
    loaded = LoadedModel(model=build_model("densenet121", preprocessing=SMALL).eval(), threshold=0.4)
    path = export_onnx(loaded, tmp_path / "m.onnx")
    reference = OnnxModel(path)
    fp32, bf16 = OpenVinoModel(path, precision="fp32"), OpenVinoModel(path, precision="bf16")
    assert fp32.threshold == 0.4 and fp32.preprocessing == SMALL and fp32.precision == "fp32"
    bf16_capable = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert bf16.precision == ("bf16" if bf16_capable else "fp32")  # what the CPU can do
    for batch in (1, 5):  # dynamic batch size
        x = images(batch, seed=batch).numpy()
        expected, got = reference.run(x), fp32.run(x)
        np.testing.assert_allclose(got[0], expected[0], atol=1e-4)
        np.testing.assert_allclose(got[1], expected[1], atol=1e-3)
        np.testing.assert_allclose(got[2], expected[2], rtol=1e-3, atol=1e-3)
        prob, heatmap, _ = bf16.run(x)
        assert np.abs(prob - expected[0]).max() < 0.05 and np.abs(heatmap - expected[1]).mean() < 0.05


def test_openvino_model_can_be_called_from_several_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    loaded = LoadedModel(model=build_model("baseline_cnn", preprocessing=SMALL).eval(), threshold=0.5)
    runtime = OpenVinoModel(export_onnx(loaded, tmp_path / "m.onnx"), precision="fp32")
    batches = [images(2, seed=k).numpy() for k in range(8)]
    alone = [runtime.run(x)[0] for x in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda x: runtime.run(x)[0], batches))
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_exported_heatmap_is_the_fast_gradcam():
    from pneumoscan.explain import gradcam

    model = build_model("densenet121", preprocessing=SMALL).eval()
    with torch.no_grad():
        prob, heatmap, _ = ServingGraph(model)(images(4))
    reference = gradcam(model, images(4))
    np.testing.assert_allclose(heatmap.numpy(), reference.heatmaps, atol=1e-5)
    np.testing.assert_allclose(prob.numpy(), reference.probabilities, atol=1e-6)


def test_int8_model_keeps_outputs_and_metadata(tmp_path):
    torch.manual_seed(0)
    loaded = LoadedModel(model=build_model("baseline_cnn", preprocessing=SMALL).eval(), threshold=0.3)
    fp32 = export_onnx(loaded, tmp_path / "m.onnx")
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", images(16, seed=3).numpy())
    runtime = OnnxModel(int8)
    assert runtime.threshold == 0.3 and runtime.preprocessing == SMALL  # metadata carried over
    prob, heatmap, _ = runtime.run(images(4).numpy())
    reference, _, _ = OnnxModel(fp32).run(images(4).numpy())
    assert prob.shape == (4,) and heatmap.shape == (4, 64, 64) and np.isfinite(heatmap).all()
    assert np.abs(prob - reference).max() < 0.05


def test_openvino_int8_model_keeps_outputs_and_metadata(tmp_path):
    torch.manual_seed(0)
    loaded = LoadedModel(model=build_model("baseline_cnn", preprocessing=SMALL).eval(), threshold=0.3)
    fp32 = export_onnx(loaded, tmp_path / "m.onnx")
    xml = quantize_openvino_int8(fp32, tmp_path / "m.int8.xml", images(16, seed=3).numpy())
    runtime = load_runtime(xml)  # an .xml goes to OpenVINO on its own
    assert runtime.runtime == "openvino" and runtime.threshold == 0.3 and runtime.preprocessing == SMALL
    prob, heatmap, _ = runtime.run(images(4).numpy())
    reference, _, _ = OnnxModel(fp32).run(images(4).numpy())
    assert prob.shape == (4,) and heatmap.shape == (4, 64, 64) and np.isfinite(heatmap).all()
    assert np.abs(prob - reference).max() < 0.05
    with pytest.raises(ValueError, match=r"\.xml"):
        quantize_openvino_int8(fp32, tmp_path / "m.int8.onnx", images(4).numpy())


def test_ood_score_is_baked_into_the_graph(tmp_path):
    model = build_model("baseline_cnn", preprocessing=SMALL).eval()
    with torch.no_grad():
        features = model.feature_map(images(64)).mean((2, 3)).numpy()
    ood = fit_ood(features[:48], features[48:])
    loaded = LoadedModel(model=model, threshold=0.5, ood=ood)
    path = export_onnx(loaded, tmp_path / "m.onnx")
    _, _, score = OnnxModel(path).run(images(3, seed=9).numpy())
    with torch.no_grad():
        expected = ood.score(model.feature_map(images(3, seed=9)).mean((2, 3)))
    np.testing.assert_allclose(score, expected, rtol=1e-3, atol=1e-3)
    assert OnnxModel(path).ood_threshold == pytest.approx(ood.threshold)


def test_export_run_writes_card_and_torchscript(tiny_run, tmp_path):
    loaded = load_model(tiny_run)
    card = export_run(tiny_run, tmp_path / "onnx", parity_images=images(6))
    assert card["onnx_parity"]["prob_max_abs_diff"] <= 1e-4
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
    np.testing.assert_allclose(ours[0], theirs[0].numpy(), atol=1e-6)


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

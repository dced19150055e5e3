"""Tests of code that only the benchmarks use: test-time mirroring and onnxruntime's int8 quantization."""

from __future__ import annotations

import numpy as np
import torch
from bench.inference import quantize_int8
from bench.robustness import FlipAveraged

from pneumoscan.checkpoint import LoadedModel
from pneumoscan.data import Preprocessing
from pneumoscan.export import export_onnx
from pneumoscan.models import build_model
from pneumoscan.runtime import OnnxModel

SMALL = Preprocessing(image_size=64)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_flip_averaging_is_the_mean_over_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = build_model("baseline_cnn", preprocessing=Preprocessing(image_size=32), width=4, blocks=2).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = (model(x) + model(x.flip(-1))) / 2
        averaged = FlipAveraged(model)(x)
        mirrored = FlipAveraged(model)(x.flip(-1))
    assert averaged.shape == (3,)
    assert torch.allclose(averaged, expected, atol=1e-6)
    assert torch.allclose(mirrored, averaged, atol=1e-6)  # invariant to mirroring, unlike the plain model
    assert not torch.allclose(model(x), model(x.flip(-1)), atol=1e-4)


def test_int8_model_keeps_outputs_and_metadata(tmp_path):
    torch.manual_seed(0)
    loaded = LoadedModel(model=build_model("baseline_cnn", preprocessing=SMALL).eval(), threshold=0.3)
    fp32 = export_onnx(loaded, tmp_path / "m.onnx")
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", images(16, seed=3).numpy())
    runtime = OnnxModel(int8)
    assert runtime.threshold == 0.3 and runtime.preprocessing == SMALL  # metadata carried over
    got, reference = runtime.run(images(4).numpy()), OnnxModel(fp32).run(images(4).numpy())
    assert got["probabilities"].shape == (4, 2) and got["heatmap"].shape == (4, 64, 64)
    assert np.isfinite(got["heatmap"]).all()
    assert np.abs(got["probabilities"] - reference["probabilities"]).max() < 0.05

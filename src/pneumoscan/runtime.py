"""One interface to run an exported or a PyTorch model: images in; probability, heatmap, OOD score out.

``load_runtime(path)`` gives an ``OnnxModel`` for a ``.onnx`` file (no PyTorch needed to run it) and
a ``TorchModel`` for a run folder or ``model.pt``. Both carry the preprocessing and the threshold
saved with the model, so serving cannot drift from training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pneumoscan.data.preprocess import Preprocessing


class TorchModel:
    """A trained checkpoint served with PyTorch (``precision="bf16"`` uses autocast + channels_last)."""

    runtime = "pytorch"

    def __init__(self, path: str | Path, *, precision: str = "fp32"):
        import torch

        from pneumoscan.checkpoint import load_model
        from pneumoscan.export import ServingGraph

        self.loaded = load_model(path)
        self.graph = ServingGraph(self.loaded.model, self.loaded.ood).eval()
        self.precision = precision
        if precision == "bf16":
            self.graph = self.graph.to(memory_format=torch.channels_last)
        self.preprocessing: Preprocessing = self.loaded.preprocessing
        self.threshold: float = self.loaded.threshold
        self.ood_threshold = self.loaded.ood.threshold if self.loaded.ood else None
        self.metadata = {"arch": self.loaded.model.arch, "path": self.loaded.path}

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        x = torch.as_tensor(images, dtype=torch.float32)
        if self.precision == "bf16":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            prob, heatmap, ood_score = self.graph(x)
        return prob.float().numpy(), heatmap.float().numpy(), ood_score.float().numpy()


class OnnxModel:
    """An exported ``.onnx`` file run by onnxruntime on the CPU."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int = 0):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        custom = self.session.get_modelmeta().custom_metadata_map
        if "pneumoscan" not in custom:
            raise ValueError(f"{path}: not exported by pneumoscan (no preprocessing/threshold metadata)")
        self.metadata = json.loads(custom["pneumoscan"])
        self.preprocessing = Preprocessing.from_dict(self.metadata["preprocessing"])
        self.threshold = float(self.metadata["threshold"])
        self.ood_threshold = self.metadata.get("ood_threshold")

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prob, heatmap, ood_score = self.session.run(None, {"images": np.ascontiguousarray(images, dtype=np.float32)})
        return prob, heatmap, ood_score


def load_runtime(path: str | Path, *, precision: str = "fp32") -> TorchModel | OnnxModel:
    """An ``OnnxModel`` for ``*.onnx``, else a ``TorchModel`` (run folder or checkpoint)."""
    if Path(path).suffix.lower() == ".onnx":
        return OnnxModel(path)
    return TorchModel(path, precision=precision)

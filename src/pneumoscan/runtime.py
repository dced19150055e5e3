"""One interface to run an exported or a PyTorch model: images in; probability, heatmap, OOD score out.

``load_runtime(path)`` gives an ``OnnxModel`` for a ``.onnx`` file (no PyTorch needed to run it) and
a ``TorchModel`` for a run folder or ``model.pt``; ``runtime="openvino"`` runs the same ``.onnx`` with
OpenVINO, whose bf16 mode is the fastest CPU path on processors with bf16 matrix instructions. All
carry the preprocessing and the threshold saved with the model, so serving cannot drift from training.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from pneumoscan.data.preprocess import Preprocessing


class TorchModel:
    """A trained checkpoint served with PyTorch in channels_last (``precision="bf16"``: bf16 autocast where the
    CPU computes bf16 natively; ``self.precision`` says what it got)."""

    runtime = "pytorch"

    def __init__(self, path: str | Path, *, precision: str = "fp32"):
        import torch

        from pneumoscan.checkpoint import load_model
        from pneumoscan.device import effective_precision
        from pneumoscan.export import ServingGraph

        self.loaded = load_model(path)
        self.graph = ServingGraph(self.loaded.model, self.loaded.ood).eval()
        self.precision = effective_precision(precision, "cpu")
        self.graph = self.graph.to(memory_format=torch.channels_last)
        self.preprocessing: Preprocessing = self.loaded.preprocessing
        self.threshold: float = self.loaded.threshold
        self.ood_threshold = self.loaded.ood.threshold if self.loaded.ood else None
        self.metadata = {"arch": self.loaded.model.arch, "path": self.loaded.path}

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        from pneumoscan.device import autocast_for

        x = torch.as_tensor(images, dtype=torch.float32)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast_for(torch.device("cpu"), self.precision):
            prob, heatmap, ood_score = self.graph(x)
        return prob.float().numpy(), heatmap.float().numpy(), ood_score.float().numpy()


class OnnxModel:
    """An exported ``.onnx`` file run by onnxruntime on the CPU."""

    runtime = "onnxruntime"
    precision = "fp32"

    def __init__(self, path: str | Path, *, threads: int = 0):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        _read_metadata(self, path, self.session.get_modelmeta().custom_metadata_map)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prob, heatmap, ood_score = self.session.run(None, {"images": np.ascontiguousarray(images, dtype=np.float32)})
        return prob, heatmap, ood_score


class OpenVinoModel:
    """An exported ``.onnx`` file, or the int8 ``.xml`` of ``export.quantize_openvino_int8``, run by OpenVINO
    on the CPU.

    ``precision="bf16"`` asks OpenVINO for bf16 inference, which uses AVX512-BF16 or AMX where the CPU
    has them (``self.precision`` says what it actually got; CPUs without them run fp32).
    Safe to call from several threads: each thread gets its own inference request.
    """

    runtime = "openvino"

    def __init__(self, path: str | Path, *, precision: str = "bf16", threads: int = 0):
        import openvino as ov

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX or OpenVINO file")
        model = ov.Core().read_model(str(path))
        _read_metadata(self, path, _openvino_metadata(path, model))
        self.compiled = compile_openvino(model, precision, threads=threads)
        self.precision = "bf16" if self.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16 else "fp32"
        self.outputs = [self.compiled.output(name) for name in ("probability", "heatmap", "ood_score")]
        self._local = threading.local()

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        results = request.infer({0: np.ascontiguousarray(images, dtype=np.float32)})
        prob, heatmap, ood_score = (np.array(results[output]) for output in self.outputs)
        return prob, heatmap, ood_score


def compile_openvino(model, precision: str, *, threads: int = 0):
    """``model`` (a file path or an ``openvino.Model``) compiled for the CPU, asking for ``precision``
    (fp32 or bf16) and tuned for latency (one stream, every thread on one request)."""
    import openvino as ov

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision={precision!r}: use fp32 or bf16")
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(str(model) if isinstance(model, (str, Path)) else model, "CPU", config)


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's metadata_props as a dict (the weights are not loaded)."""
    import onnx

    return {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}


def _openvino_metadata(path: Path, model) -> dict:
    """The pneumoscan metadata of an ONNX file (its metadata_props) or an OpenVINO model (its rt_info)."""
    if path.suffix.lower() == ".onnx":
        return onnx_metadata(path)
    return {"pneumoscan": model.get_rt_info(["pneumoscan"]).astype(str)} if model.has_rt_info(["pneumoscan"]) else {}


def _read_metadata(model, path: Path, custom: dict) -> None:
    """Set ``metadata``, ``preprocessing``, ``threshold`` and ``ood_threshold`` from the ONNX metadata."""
    if "pneumoscan" not in custom:
        raise ValueError(f"{path}: not exported by pneumoscan (no preprocessing/threshold metadata)")
    model.metadata = json.loads(custom["pneumoscan"])
    model.preprocessing = Preprocessing.from_dict(model.metadata["preprocessing"])
    model.threshold = float(model.metadata["threshold"])
    model.ood_threshold = model.metadata.get("ood_threshold")


def card_path(model_file: str | Path) -> Path:
    """Where the model card of an exported file lies: beside it, named by the part of its name before the
    first dot (model.onnx, model.torchscript.pt and model.int8.xml all share model.card.json)."""
    model_file = Path(model_file)
    return model_file.parent / (model_file.name.split(".")[0] + ".card.json")


RUNTIMES = ("auto", "pytorch", "onnxruntime", "openvino")


def load_runtime(path: str | Path, *, precision: str = "fp32",
                 runtime: str = "auto") -> TorchModel | OnnxModel | OpenVinoModel:
    """The model at ``path`` behind one interface.

    ``runtime="auto"``: onnxruntime for ``*.onnx``, OpenVINO for an OpenVINO ``*.xml`` (the int8 export),
    PyTorch for a run folder or checkpoint. ``"openvino"`` also runs a ``*.onnx``; ``precision`` applies to
    PyTorch and OpenVINO.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r}: use one of {RUNTIMES}")
    suffix = Path(path).suffix.lower()
    is_onnx, is_openvino = suffix == ".onnx", suffix == ".xml"
    if runtime == "onnxruntime" and not is_onnx:
        raise ValueError(f"{path}: the onnxruntime runtime needs an exported .onnx file (pneumoscan export RUN)")
    if runtime == "openvino" and not (is_onnx or is_openvino):
        raise ValueError(f"{path}: the openvino runtime needs an exported .onnx or OpenVINO .xml file "
                         f"(pneumoscan export RUN)")
    if runtime == "pytorch" and (is_onnx or is_openvino):
        raise ValueError(f"{path}: the pytorch runtime needs a run folder or model.pt, not an exported file")
    if runtime == "openvino" or is_openvino:
        return OpenVinoModel(path, precision=precision)
    if is_onnx:
        return OnnxModel(path)
    return TorchModel(path, precision=precision)

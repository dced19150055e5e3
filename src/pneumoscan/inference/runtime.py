"""The engines that run the screening graph (``graph.ServingGraph``): network inputs in; class
probabilities, heatmap and input-check scores out, as a dict keyed by ``graph.OUTPUTS``
(and ``graph.ANATOMY_OUTPUTS`` for a model that draws the lungs).

``load_runtime(path)`` gives an ``OnnxModel`` for a ``.onnx`` file (no PyTorch needed to run it) and
a ``TorchModel`` for a run folder or ``model.pt``; ``runtime="openvino"`` runs the same ``.onnx`` with
OpenVINO, whose bf16 mode is the fastest CPU path on processors with bf16 matrix instructions. Each
carries the model's description (``model_description``); nothing here
decides anything: ``screen.Screener`` does, for every entry point.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path

import numpy as np

from pneumoscan.data.preprocess import Preprocessing
from pneumoscan.models.description import ModelDescription


class TorchModel:
    """A trained checkpoint served with PyTorch in channels_last (``precision="bf16"``: bf16 autocast where the
    CPU computes bf16 natively; ``self.precision`` says what it got)."""

    runtime = "pytorch"

    def __init__(self, source, *, precision: str = "fp32"):
        """``source``: a run folder, a ``model.pt`` or an already loaded ``checkpoint.LoadedModel`` (copied, so
        that the caller's modules keep their memory format)."""
        import copy
        import dataclasses

        import torch

        from pneumoscan.device import effective_precision
        from pneumoscan.inference.graph import ServingGraph, model_metadata
        from pneumoscan.models.checkpoint import LoadedModel, load_model

        self.loaded = (dataclasses.replace(source, model=copy.deepcopy(source.model)) if isinstance(source, LoadedModel)
                       else load_model(source))
        path = self.loaded.path
        self.graph = ServingGraph.of(self.loaded)
        self.precision = effective_precision(precision, "cpu")
        self.graph = self.graph.to(memory_format=torch.channels_last)
        _read_metadata(self, Path(path), {"pneumoscan": json.dumps(model_metadata(self.loaded))})

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        from pneumoscan.device import autocast_for

        x = torch.as_tensor(images, dtype=torch.float32)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast_for(torch.device("cpu"), self.precision):
            outputs = self.graph(x)
        return {name: value.float().numpy() for name, value in zip(self.metadata["outputs"], outputs)}


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

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(list(self.metadata["outputs"]),
                                   {"images": np.ascontiguousarray(images, dtype=np.float32)})
        return dict(zip(self.metadata["outputs"], outputs))


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
        model = openvino_core().read_model(str(path))
        _read_metadata(self, path, _openvino_metadata(path, model))
        self.compiled = compile_openvino(model, precision, threads=threads)
        self.precision = "bf16" if self.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16 else "fp32"
        self.outputs = {name: self.compiled.output(name) for name in self.metadata["outputs"]}
        self._local = threading.local()

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        results = request.infer({0: np.ascontiguousarray(images, dtype=np.float32)})
        return {name: np.array(results[output]) for name, output in self.outputs.items()}


def compile_openvino(model, precision: str, *, threads: int = 0):
    """``model`` (a file path or an ``openvino.Model``) compiled for the CPU, asking for ``precision``
    (fp32 or bf16) and tuned for latency (one stream, every thread on one request)."""

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision={precision!r}: use fp32 or bf16")
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return openvino_core().compile_model(str(model) if isinstance(model, (str, Path)) else model, "CPU", config)


@functools.cache
def openvino_core():
    """The process's one OpenVINO ``Core``, as OpenVINO advises: every further ``Core`` loads the CPU plugin again,
    and a process that made several has crashed on exit (seen in this suite's xdist workers)."""
    import openvino as ov

    return ov.Core()


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
    """Set ``metadata``, ``description`` and the ``preprocessing`` it names."""
    from pneumoscan.inference.graph import ANATOMY_OUTPUTS, OUTPUTS

    if "pneumoscan" not in custom:
        raise ValueError(f"{path}: not exported by pneumoscan (no model description in its metadata)")
    model.metadata = json.loads(custom["pneumoscan"])
    outputs = tuple(model.metadata.get("outputs", ()))
    if outputs not in (OUTPUTS, OUTPUTS + ANATOMY_OUTPUTS) or "description" not in model.metadata:
        raise ValueError(f"{path}: exported by an older pneumoscan (no model description, or outputs "
                         f"{model.metadata.get('outputs')}); export the run again with this version")
    model.description = ModelDescription.from_dict(model.metadata["description"])
    model.preprocessing = Preprocessing.from_dict(model.description.preprocessing)


RUNTIMES = ("auto", "pytorch", "onnxruntime", "openvino")


def load_runtime(path: str | Path, *, precision: str = "fp32", runtime: str = "auto",
                 threads: int = 0) -> TorchModel | OnnxModel | OpenVinoModel:
    """The model at ``path`` behind one interface.

    ``runtime="auto"``: onnxruntime for ``*.onnx``, OpenVINO for an OpenVINO ``*.xml`` (the int8 export),
    PyTorch for a run folder or checkpoint. ``"openvino"`` also runs a ``*.onnx``; ``precision`` applies to
    PyTorch and OpenVINO. ``threads``: what onnxruntime and OpenVINO may use (0: every core); PyTorch uses
    ``torch.get_num_threads()``, set for the whole process.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r}: use one of {RUNTIMES}")
    if not isinstance(path, (str, Path)):  # a LoadedModel
        return TorchModel(path, precision=precision)
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
        return OpenVinoModel(path, precision=precision, threads=threads)
    if is_onnx:
        return OnnxModel(path, threads=threads)
    return TorchModel(path, precision=precision)

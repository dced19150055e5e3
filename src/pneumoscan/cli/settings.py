"""The settings of the commands that use a finished model, one frozen dataclass each (``train``, ``compare`` and
``tune`` have theirs beside their stage): what a command runs with is one value, checked when it is made, whatever
the parser's defaults. The parser's argument names are the fields' names (``--batch-size`` -> ``batch_size``)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import TypeVar

from pneumoscan.inference.runtime import RUNTIMES

PRECISIONS = ("fp32", "bf16")
T = TypeVar("T")


@dataclass(frozen=True)
class ModelRuntime:
    """Which engine runs the model, and in what precision (``inference.runtime.load_runtime``)."""

    runtime: str = "auto"              # auto: onnxruntime for .onnx, OpenVINO for .xml, PyTorch for a run folder
    precision: str = "fp32"            # fp32, or bf16 where the CPU computes it natively (PyTorch, OpenVINO)

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime={self.runtime!r}: choose one of {RUNTIMES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: choose one of {PRECISIONS}")


@dataclass(frozen=True)
class EvaluateSettings(ModelRuntime):
    model: str = ""                    # run folder, model.pt, .onnx or OpenVINO .xml
    data: str = ""                     # dataset root (ROOT/<split>/<class>/) or a path,label CSV
    split: str = "test"                # the split of a dataset root
    out: str = ""                      # "" = beside the model, eval-<split>


@dataclass(frozen=True)
class PredictSettings(ModelRuntime):
    model: str = ""
    inputs: tuple[str, ...] = ()       # image files, folders (searched by content) or CSVs with a path column
    out: str = ""                      # a CSV of the screenings ("" = print them)
    batch_size: int = 16
    engine: str = "local"              # local, or ray: a Ray cluster's actors screen the files
    address: str = ""                  # with ray: a running cluster ("" = a local one)
    actors: int = 2                    # with ray: model replicas screening in parallel

    def __post_init__(self):
        super().__post_init__()
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine={self.engine!r}: choose local or ray")
        if self.batch_size < 1 or self.actors < 1:
            raise ValueError("batch_size and actors must be at least 1")


@dataclass(frozen=True)
class ExplainSettings:
    model: str = ""                    # run folder or model.pt
    inputs: tuple[str, ...] = ()
    out: str = ""                      # panels, explanations.csv, index.html
    method: str = "gradcam"            # one of explain.METHODS
    target: str = "predicted"          # the class whose evidence is drawn (default: the screening's label)
    scale: str = "image"               # image: each map spans [0, 1]; probability: dimmed by its class's probability
    batch_size: int = 16
    save_arrays: bool = False          # also each map as .npy
    review: str = ""                   # a split of data to review (errors and confident hits per class)
    data: str = ""                     # for review
    confident: int = 8                 # confident hits shown per class in a review
    anatomy: bool = False              # a review also measures each map against the lungs (anatomy.json)
    masks: str = ""                    # human lung masks laid out like data (default: the model's segmenter's)
    compare: str = ""                  # a second model to draw beside the first


@dataclass(frozen=True)
class ExportSettings:
    model: str = ""                    # run folder or model.pt
    out: str = ""                      # the folder the files and the card go to
    format: str = "onnx"               # onnx or torchscript
    data: str = ""                     # images for the parity check ("" = the run's validation split)
    split: str = "test"
    parity_images: int = 64            # screened by PyTorch and the export; any difference refuses the export
    openvino_int8: int = 0             # > 0: an OpenVINO int8 model calibrated on this many training images

    def __post_init__(self):
        if self.format not in ("onnx", "torchscript"):
            raise ValueError(f"format={self.format!r}: choose onnx or torchscript")


@dataclass(frozen=True)
class ServeSettings(ModelRuntime):
    model: str = ""                    # model.onnx, a run folder or model.pt
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: int = 20            # a body declared or grown over this is answered 413
    upload_timeout: float = 15.0       # a body that stalls this many seconds is answered 408
    inbox: str = ""                    # a DICOM node's inbox: GET /v1/worklist lists its studies


def command_settings(cls: type[T], args: argparse.Namespace) -> T:
    """``cls`` from the parsed arguments of the same names (lists become tuples; an argument left out keeps the
    field's default)."""
    values = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)

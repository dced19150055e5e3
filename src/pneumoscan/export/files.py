"""Stage 7 of the pipeline: a model that predicts *and* explains without PyTorch (ONNX, TorchScript, OpenVINO
int8), checked against PyTorch, with its model card (``export.card``).

``ServingGraph`` maps an image batch to (class probabilities, a Grad-CAM heatmap of each class's
evidence at input resolution, population-shift score, probability that the image is of the model's
modality: see ``input_checks``). The heatmap's gradient is the head's closed form
(``explain.ClosedFormGradCAM``), so the ONNX graph needs no autograd. The ONNX file carries the
model's description (``model_description``) as metadata, and the card is written from it; every export is checked
against PyTorch through ``screen.Screener``, the object every entry point screens with.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from pneumoscan.data import evenly_spaced, load_samples, read_split, stack_inputs
from pneumoscan.export.card import card_markdown, card_path, model_card
from pneumoscan.inference.graph import METADATA_KEY, ServingGraph, graph_outputs, model_metadata
from pneumoscan.models.checkpoint import LoadedModel, load_model, resolve_model_path
from pneumoscan.run_folder import RunFolder

log = logging.getLogger(__name__)

def export_onnx(loaded: LoadedModel, path: str | Path, *, opset: int = 18) -> Path:
    """Write the serving graph as ONNX (dynamic batch) with the model's metadata embedded."""
    import onnx

    path = Path(path)
    graph = ServingGraph.of(loaded)
    size = loaded.preprocessing.image_size
    example = torch.zeros(2, loaded.preprocessing.channels, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(graph, (example,), str(path), input_names=["images"], output_names=list(graph_outputs(loaded)),
                      dynamic_shapes={"images": {0: batch}}, opset_version=opset, dynamo=True,
                      external_data=False, verbose=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(model_metadata(loaded))
    onnx.save(proto, str(path))
    log.info("exported ONNX model %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def export_torchscript(loaded: LoadedModel, path: str | Path) -> Path:
    """Write the serving graph as TorchScript (traced), with the metadata as an extra file."""
    path = Path(path)
    graph = ServingGraph.of(loaded)
    size = loaded.preprocessing.image_size
    with torch.no_grad():
        traced = torch.jit.trace(graph, torch.zeros(2, loaded.preprocessing.channels, size, size))
    torch.jit.save(traced, str(path), _extra_files={"pneumoscan.json": json.dumps(model_metadata(loaded))})
    return path


def parity_check(model_path: str | Path, onnx_path: str | Path, paths: list[str]) -> dict:
    """Screen ``paths`` with PyTorch and with onnxruntime: largest differences, and how many outcomes differ."""
    from pneumoscan.inference.screen import load

    reference = load(model_path).screen(paths, heatmaps=True, progress=False)
    exported = load(onnx_path).screen(paths, heatmaps=True, progress=False)
    both = [(a, b) for a, b in zip(reference, exported) if a.scored and b.scored]
    return {"images": len(paths), "scored": len(both),
            "outcome_mismatches": sum((a.status, a.label, a.explained) != (b.status, b.label, b.explained)
                                      for a, b in zip(reference, exported)),
            "prob_max_abs_diff": max((abs(a.probability - b.probability) for a, b in both), default=0.0),
            "heatmap_max_abs_diff": max((float(np.abs(a.heatmap - b.heatmap).max()) for a, b in both), default=0.0),
            **_lung_differences(both)}


def _lung_differences(both: list) -> dict:
    """For a model that draws the lungs: how far apart the two runtimes' lung numbers are (reported, not limited:
    a pixel on the mask's edge may fall either side of 0.5)."""
    lungs = [(a, b) for a, b in both if a.lung_area_fraction is not None]
    if not lungs:
        return {}
    heat = [(a.heat_in_lungs, b.heat_in_lungs) for a, b in lungs if a.heat_in_lungs is not None]
    return {"lung_area_max_abs_diff": max(abs(a.lung_area_fraction - b.lung_area_fraction) for a, b in lungs),
            "heat_in_lungs_max_abs_diff": max((abs(x - (y if y is not None else 0.0)) for x, y in heat), default=0.0)}


PARITY_LIMITS = {"prob_max_abs_diff": 1e-4, "heatmap_max_abs_diff": 1e-3, "outcome_mismatches": 0}


def check_parity(parity: dict) -> None:
    """A ``ValueError`` naming every difference over ``PARITY_LIMITS`` (a status, label or explained class that
    differs, or probabilities or heatmaps further apart than float noise)."""
    over = [f"{key} {parity[key]:.3g} > {limit:g}" for key, limit in PARITY_LIMITS.items() if parity[key] > limit]
    if over:
        raise ValueError(f"the export screens differently from the trained model on {parity['images']} images: "
                         f"{', '.join(over)}; it was not accepted")


def parity_images(model_path: str | Path, count: int, data: str | None = None, split: str = "test") -> list[str]:
    """The images an export screens with both PyTorch and the exported file: ``count`` of ``data`` (a
    dataset root's ``split`` or a label CSV), else of the run's validation split ([] without one)."""
    if data:
        samples = load_samples(data, split if Path(data).is_dir() else None)
    else:
        split_file = RunFolder(resolve_model_path(model_path).parent).split
        if not split_file.exists():
            return []
        samples = read_split(split_file)["val"]
    return [samples[i].path for i in evenly_spaced(len(samples), count)]


def calibration_inputs(model_path: str | Path, count: int) -> np.ndarray:
    """``count`` training images of the run's split (evenly spaced), as network inputs for int8 calibration."""
    split_file = RunFolder(resolve_model_path(model_path).parent).split
    if not split_file.exists():
        raise FileNotFoundError(f"{split_file}: int8 calibration needs the run's split (its training images)")
    train = read_split(split_file)["train"]
    chosen = [train[i] for i in evenly_spaced(len(train), count)]
    return stack_inputs(chosen, load_model(model_path).preprocessing).numpy()


def export_run(model_path: str | Path, out_dir: str | Path, *, fmt: str = "onnx",
               parity_paths: list[str] | None = None, int8_calibration: np.ndarray | None = None) -> dict:
    """Export a trained model (run folder or model.pt) with its model card; returns the card.

    With ``int8_calibration`` (network inputs of training images) an ONNX export also gets the OpenVINO
    int8 model ``model.int8.xml``, listed with its hashes in the same card."""
    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"format {fmt!r}: choose onnx or torchscript")
    loaded = load_model(model_path)
    checkpoint = resolve_model_path(model_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt")
    (export_onnx if fmt == "onnx" else export_torchscript)(loaded, target)
    parity = None
    if fmt == "onnx" and parity_paths:
        parity = parity_check(model_path, target, parity_paths)
        log.info("ONNX parity on %d images: probability %.2e, heatmap %.2e, %d outcomes differ", parity["images"],
                 parity["prob_max_abs_diff"], parity["heatmap_max_abs_diff"], parity["outcome_mismatches"])
        try:
            check_parity(parity)
        except ValueError:
            target.unlink()  # nobody serves an export that decides differently
            raise
    files, int8 = [target, checkpoint], None
    if fmt == "onnx" and int8_calibration is not None:
        xml = quantize_openvino_int8(target, out_dir / "model.int8.xml", int8_calibration)
        files += [xml, xml.with_suffix(".bin")]
        int8 = {"file": xml.name, "calibration_images": len(int8_calibration),
                "quantized": "convolutions to int8 by NNCF; head, heatmap and input checks in float",
                "check": "measure its metrics against model.onnx before serving it "
                         "(bench/inference.py does on the test split)"}
    card = model_card(loaded, files, parity)
    if int8:
        card["openvino_int8"] = int8
    card_file = card_path(target)
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    card_file.with_suffix(".md").write_text(card_markdown(card))
    return card


def quantize_openvino_int8(onnx_path: str | Path, out_path: str | Path, calibration: np.ndarray) -> Path:
    """OpenVINO int8 model (``out_path``: an ``.xml`` with its ``.bin``) of an exported ONNX file, by NNCF
    post-training quantization of the convolutions only, calibrated on ``calibration`` (network inputs
    from the training images). The head, the heatmap arithmetic and the OOD score stay in float, so the
    heatmap has no NaN and the OOD score moves little. The pneumoscan metadata is kept in the model's
    rt_info. Check the metrics before serving it: ``bench/inference.py`` does."""
    import nncf
    import openvino as ov

    from pneumoscan.inference.runtime import onnx_metadata, openvino_core

    out_path = Path(out_path)
    if out_path.suffix != ".xml":
        raise ValueError(f"{out_path}: an OpenVINO model is written as .xml (+ .bin)")
    model = openvino_core().read_model(str(onnx_path))
    others = sorted({op.get_type_name() for op in model.get_ops()} - {"Convolution"})
    dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration), fast_bias_correction=False,
                              ignored_scope=nncf.IgnoredScope(types=others, validate=False))
    metadata = onnx_metadata(onnx_path)
    if METADATA_KEY in metadata:
        quantized.set_rt_info(metadata[METADATA_KEY], [METADATA_KEY])
    ov.save_model(quantized, str(out_path))
    log.info("wrote OpenVINO int8 model %s", out_path)
    return out_path

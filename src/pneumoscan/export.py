"""Stage 7 of the pipeline: a model that predicts *and* explains without PyTorch, plus its model card.

``ServingGraph`` maps an image batch to (class probabilities, a Grad-CAM heatmap of each class's
evidence at input resolution, population-shift score, probability that the image is of the model's
modality: see ``input_checks``). The heatmap's gradient is the head's closed form
(``explain.ClosedFormGradCAM``), so the ONNX graph needs no autograd. The ONNX file carries the
model's description (``model_description``) as metadata, and the card is written from it; every export is checked
against PyTorch through ``screen.Screener``, the object every entry point screens with.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from pneumoscan.checkpoint import LoadedModel, load_model, resolve_model_path
from pneumoscan.data import evenly_spaced, load_samples, read_split, stack_inputs
from pneumoscan.data.tasks import with_article
from pneumoscan.graph import METADATA_KEY, OUTPUTS, ServingGraph, model_metadata
from pneumoscan.model_description import checks_sentence
from pneumoscan.run_folder import RunFolder

log = logging.getLogger(__name__)

def card_path(model_file: str | Path) -> Path:
    """Where the model card of an exported file lies: beside it, named by the part of its name before the
    first dot (model.onnx, model.torchscript.pt and model.int8.xml all share model.card.json)."""
    model_file = Path(model_file)
    return model_file.parent / (model_file.name.split(".")[0] + ".card.json")


def export_onnx(loaded: LoadedModel, path: str | Path, *, opset: int = 18) -> Path:
    """Write the serving graph as ONNX (dynamic batch) with the model's metadata embedded."""
    import onnx

    path = Path(path)
    graph = ServingGraph(loaded.model.eval(), loaded.checks).eval()
    size = loaded.preprocessing.image_size
    example = torch.zeros(2, loaded.preprocessing.channels, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(graph, (example,), str(path), input_names=["images"], output_names=list(OUTPUTS),
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
    graph = ServingGraph(loaded.model.eval(), loaded.checks).eval()
    size = loaded.preprocessing.image_size
    with torch.no_grad():
        traced = torch.jit.trace(graph, torch.zeros(2, loaded.preprocessing.channels, size, size))
    torch.jit.save(traced, str(path), _extra_files={"pneumoscan.json": json.dumps(model_metadata(loaded))})
    return path


def parity_check(model_path: str | Path, onnx_path: str | Path, paths: list[str]) -> dict:
    """Screen ``paths`` with PyTorch and with onnxruntime: largest differences, and how many outcomes differ."""
    from pneumoscan.screen import load

    reference = load(model_path).screen(paths, heatmaps=True, progress=False)
    exported = load(onnx_path).screen(paths, heatmaps=True, progress=False)
    both = [(a, b) for a, b in zip(reference, exported) if a.scored and b.scored]
    return {"images": len(paths), "scored": len(both),
            "outcome_mismatches": sum((a.status, a.label, a.explained) != (b.status, b.label, b.explained)
                                      for a, b in zip(reference, exported)),
            "prob_max_abs_diff": max((abs(a.probability - b.probability) for a, b in both), default=0.0),
            "heatmap_max_abs_diff": max((float(np.abs(a.heatmap - b.heatmap).max()) for a, b in both), default=0.0)}


PARITY_LIMITS = {"prob_max_abs_diff": 1e-4, "heatmap_max_abs_diff": 1e-3, "outcome_mismatches": 0}


def check_parity(parity: dict) -> None:
    """A ``ValueError`` naming every difference over ``PARITY_LIMITS`` (a status, label or explained class that
    differs, or probabilities or heatmaps further apart than float noise)."""
    over = [f"{key} {parity[key]:.3g} > {limit:g}" for key, limit in PARITY_LIMITS.items() if parity[key] > limit]
    if over:
        raise ValueError(f"the export screens differently from the trained model on {parity['images']} images: "
                         f"{', '.join(over)}; it was not accepted")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_card(loaded: LoadedModel, files: list[Path], parity: dict | None) -> dict:
    """What a user or reviewer needs to know before trusting the model, as data: its description, the
    exported files and their parity with PyTorch."""
    d = loaded.description
    return {
        "name": d.name,
        "version": f"{d.arch}-{sha256_of(files[0])[:12]}",
        "task": d.task, "classes": list(d.classes), "display": d.display, "modality": d.modality,
        "population": d.population, "intended_use": d.intended_use,
        "data": {"validation": "held out of train by patient or duplicate group", **d.training},
        "preprocessing": d.preprocessing,
        "threshold": {"value": d.threshold, "rule": d.threshold_rule, "chosen_on": d.threshold_on or "validation",
                      "ci95_over_validation_patients": d.threshold_ci95},
        "test_metrics": d.metrics.get("test"),
        "validation_metrics": d.metrics.get("validation"),
        "validation_under_acquisition_shifts": d.metrics.get("validation_under_acquisition_shifts"),
        "input_checks": d.input_checks,
        "limitations": list(d.limitations),
        "description": d.to_dict(),
        "onnx_parity": parity,
        "files": {p.name: {"sha256": sha256_of(p), "bytes": p.stat().st_size} for p in files},
    }


def card_markdown(card: dict) -> str:
    """The model card as Markdown."""
    lines = [f"# {card['name']} ({card['version']})", "", f"Classes: {_class_words(card)}. Modality: "
             f"{card['modality']}. Validated on {card['population']}.", "", "## Intended use", card["intended_use"], "",
             "## Data", *[f"- {k}: {v}" for k, v in card["data"].items()], "",
             "## Preprocessing", *[f"- {k}: {v}" for k, v in card["preprocessing"].items()], "",
             "## Decision threshold",
             f"{card['threshold']['value']:.4f}, chosen by rule `{card['threshold']['rule']}` on "
             f"{card['threshold']['chosen_on']} (never on test).", *_threshold_interval_lines(card['threshold']), ""]
    for title, key in (("Test metrics", "test_metrics"), ("Validation metrics", "validation_metrics")):
        if card.get(key):
            lines += [f"## {title} (95% bootstrap CI)", "| metric | value | 95% CI |", "|---|---|---|"]
            lines += [f"| {k} | {v['value']:.4f} | {_interval(v['ci95'])} |" for k, v in card[key].items()
                      if isinstance(v, dict)]
            lines.append("")
    if card.get("validation_under_acquisition_shifts"):
        lines += ["## Validation under synthetic acquisition shifts",
                  *[f"- {k}: {v:.4f}" for k, v in card["validation_under_acquisition_shifts"].items()], ""]
    if card.get("input_checks"):
        lines += ["## Input checks", *_input_check_lines(card["input_checks"], card["modality"], card["population"]),
                  checks_sentence(card["input_checks"]).capitalize() + ".", ""]
    lines += ["## Limitations", *[f"- {item}" for item in card["limitations"]], ""]
    if card.get("onnx_parity"):
        lines += ["## ONNX parity with PyTorch", *[f"- {k}: {v}" for k, v in card["onnx_parity"].items()], ""]
    lines += ["## Files", *[f"- `{name}`: sha256 `{v['sha256']}` ({v['bytes']:,} bytes)"
                            for name, v in card["files"].items()]]
    return "\n".join(lines) + "\n"


def _interval(ci95) -> str:
    return f"[{ci95[0]:.4f}, {ci95[1]:.4f}]" if ci95 else ""


def _class_words(card: dict) -> str:
    return ", ".join(f"{name} ({card['display'][name]})" if card["display"].get(name, name) != name else name
                     for name in card["classes"])


def _input_check_lines(limits: dict, modality: str, population: str) -> list[str]:
    refuse = (f"Images that are not {with_article(modality)} (the modality gate's probability under "
              f"{limits['gate_threshold']:.2f}), blank images and colour images are refused, not scored."
              if limits.get("gate_threshold") is not None else "Blank and colour images are refused.")
    classifier = (" or that a classifier fitted on examples of other populations puts there (probability over "
                  f"{limits['population_limit']:.2f})" if limits.get("other_population_classifier") else "")
    return [refuse, f"Images far from the training images' features (novelty over {limits['novelty_threshold']:.3f}, "
            f"the {100 * limits['novelty_quantile']:.1f}% quantile of validation images){classifier} are scored and "
            f"flagged: they are unlike {population}."]


def _threshold_interval_lines(threshold: dict) -> list[str]:
    interval = threshold.get("ci95_over_validation_patients")
    if not interval:
        return []
    return [f"Its bootstrap 95% interval over validation patients is [{interval[0]:.4f}, {interval[1]:.4f}]: "
            "another draw of validation patients could have put it anywhere in there, so check it on local data "
            "before use."]


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

    from pneumoscan.runtime import onnx_metadata

    out_path = Path(out_path)
    if out_path.suffix != ".xml":
        raise ValueError(f"{out_path}: an OpenVINO model is written as .xml (+ .bin)")
    model = ov.Core().read_model(str(onnx_path))
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

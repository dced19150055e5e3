"""Inference benchmark: images/s on this CPU for every runtime, with and without heatmaps.

    python -m bench.inference [--run bench/work/accuracy_densenet121]

Runtimes, side by side in one run: PyTorch eager fp32, PyTorch bf16 autocast + channels_last,
onnxruntime fp32, onnxruntime int8 (static QDQ, calibrated on 128 training images), OpenVINO fp32
and bf16 on the same ONNX files (the served ``runtime.OpenVinoModel``) and OpenVINO int8 (NNCF,
convolutions only, calibrated on 300 training images, the other operations in bf16); each at batch 1
and 16, each predicting alone and predicting with the Grad-CAM heatmap. The fastest path's test AUC and
heatmaps are compared with fp32. Writes ``bench/results/inference.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import DATA, ROOT, launch_commit, write_result
from pneumoscan.data import read_split, scan_kaggle_split, stack_inputs
from pneumoscan.evaluate import binary_metrics
from pneumoscan.export.files import ServingGraph, export_onnx, parity_check, quantize_openvino_int8
from pneumoscan.inference.runtime import OpenVinoModel, compile_openvino, openvino_core
from pneumoscan.models.checkpoint import load_model


def quantize_int8(onnx_path: str | Path, out_path: str | Path, calibration: np.ndarray) -> Path:
    """Static int8 quantization (QDQ, per-channel weights) of the convolutions, calibrated on
    ``calibration`` (network inputs from the training images). The head (a few small matrix products,
    whose per-channel bias adjustment onnxruntime cannot do for a transposed Gemm) and the heatmap
    arithmetic stay in float. Check the metrics before serving it: ``bench/inference.py`` does."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": calibration[i:i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self):
            return next(self.batches, None)

    out_path = Path(out_path)
    prepared = out_path.with_name(out_path.stem + ".prep.onnx")
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv"])
    prepared.unlink()
    source, target = onnx.load(str(onnx_path)), onnx.load(str(out_path))
    del target.metadata_props[:]
    for entry in source.metadata_props:
        target.metadata_props.add(key=entry.key, value=entry.value)
    onnx.save(target, str(out_path))
    return out_path


class ProbabilityOnly(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return torch.sigmoid(self.model(images))


def export_probability_only(model, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(ProbabilityOnly(model).eval(), (torch.zeros(2, 3, 224, 224),), str(path),
                      input_names=["images"], output_names=["probability"], dynamic_shapes={"images": {0: batch}},
                      dynamo=True, external_data=False)
    return path


def images_per_second(runners: dict, images: np.ndarray, batch: int, repeats: int = 5) -> dict[str, float]:
    """Throughput of every runner on the same 64 images, timed interleaved (runner after runner, repeated)
    so that drift of the machine's speed affects all of them alike; the median of ``repeats``."""
    chunks = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)][: max(1, 64 // batch)]
    for run in runners.values():
        run(chunks[0])
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            started = time.perf_counter()
            for chunk in chunks:
                run(chunk)
            times[name].append(time.perf_counter() - started)
    return {name: sum(len(c) for c in chunks) / statistics.median(t) for name, t in times.items()}


def torch_runner(module, precision: str):
    if precision == "bf16":
        module = module.to(memory_format=torch.channels_last)

    def run(x):
        x = torch.from_numpy(x)
        if precision == "bf16":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = module(x)
        return [o.float().numpy() for o in out] if isinstance(out, tuple) else [out.float().numpy()]
    return run


def ort_runner(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x})


def openvino_runner(path: Path, precision: str):
    """OpenVINO on a model file without pneumoscan metadata (the probability-only graph)."""
    compiled = compile_openvino(path, precision)
    request = compiled.create_infer_request()
    return lambda x: [np.array(request.infer({0: x})[output]) for output in compiled.outputs]


def listed(run):
    """An engine's ``run`` (outputs by name) as the list of outputs in graph order, like the other runners."""
    return lambda x: list(run(x).values())


def openvino_capabilities() -> list[str]:

    return list(openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def inputs(model, samples) -> np.ndarray:
    return stack_inputs(samples, model.preprocessing).numpy()


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default=str(ROOT / "bench" / "work" / "accuracy_densenet121"))
    args = parser.parse_args()
    run_dir = Path(args.run)
    work = run_dir / "inference"
    work.mkdir(exist_ok=True)
    loaded = load_model(run_dir)
    model = loaded.model.eval()
    test = scan_kaggle_split(DATA, "test")
    y_test = np.array([s.label for s in test])
    test_x = inputs(model, test)
    train = read_split(run_dir / "split.csv")["train"]
    calibration = inputs(model, train[::35][:128])
    calibration_openvino = inputs(model, train[::17][:300])

    onnx_fp32 = export_onnx(loaded, work / "model.onnx")
    onnx_int8 = quantize_int8(onnx_fp32, work / "model.int8.onnx", calibration)
    prob_fp32 = export_probability_only(model, work / "prob.onnx")
    prob_int8 = quantize_int8(prob_fp32, work / "prob.int8.onnx", calibration)
    openvino_int8 = quantize_openvino_int8(onnx_fp32, work / "model.int8.xml", calibration_openvino)
    prob_openvino_int8 = quantize_openvino_int8(prob_fp32, work / "prob.int8.xml", calibration_openvino)
    graph = ServingGraph(model, loaded.checks).eval()
    openvino = {p: OpenVinoModel(onnx_fp32, precision=p) for p in ("fp32", "bf16")}

    runners = {
        **{f"pytorch_{p}": {"heatmap": torch_runner(graph, p), "predict": torch_runner(ProbabilityOnly(model), p)}
           for p in ("fp32", "bf16")},
        "onnxruntime_fp32": {"heatmap": ort_runner(onnx_fp32), "predict": ort_runner(prob_fp32)},
        "onnxruntime_int8": {"heatmap": ort_runner(onnx_int8), "predict": ort_runner(prob_int8)},
        **{f"openvino_{p}": {"heatmap": listed(served.run), "predict": openvino_runner(prob_fp32, p)}
           for p, served in openvino.items()},
        "openvino_int8": {"heatmap": listed(OpenVinoModel(openvino_int8, precision="bf16").run),
                          "predict": openvino_runner(prob_openvino_int8, "bf16")},
    }
    speed = {name: {"heatmap": {}, "predict": {}} for name in runners}
    for kind in ("heatmap", "predict"):
        for b in (1, 16):
            measured = images_per_second({name: kinds[kind] for name, kinds in runners.items()}, test_x, b)
            for name, value in measured.items():
                speed[name][kind][str(b)] = round(value, 2)
    for name, numbers in speed.items():
        print(name, numbers)

    outputs = {name: [np.concatenate(parts) for parts in zip(*[kinds["heatmap"](test_x[i:i + 16])
                                                                for i in range(0, len(test_x), 16)])]
               for name, kinds in runners.items()}
    reference_prob, reference_map = outputs["pytorch_fp32"][0][:, 1], outputs["pytorch_fp32"][1]
    quality = {}
    for name, (probabilities, heatmap, *_) in outputs.items():
        prob = probabilities[:, 1]  # PNEUMONIA
        quality[name] = {"test_auc": binary_metrics(y_test, prob, loaded.threshold)["auc"],
                         "test_accuracy": binary_metrics(y_test, prob, loaded.threshold)["accuracy"],
                         "auc_delta_vs_fp32": binary_metrics(y_test, prob, 0.5)["auc"]
                         - binary_metrics(y_test, reference_prob, 0.5)["auc"],
                         "prob_max_abs_diff_vs_fp32": float(np.abs(prob - reference_prob).max()),
                         "heatmap_mean_abs_diff_vs_fp32": float(np.abs(heatmap - reference_map).mean()),
                         "heatmap_p99_abs_diff_vs_fp32": float(np.quantile(np.abs(heatmap - reference_map), 0.99))}
    base16 = speed["pytorch_fp32"]["heatmap"]["16"]
    keeps = [n for n, q in quality.items() if abs(q["auc_delta_vs_fp32"]) <= 0.002
             and q["heatmap_mean_abs_diff_vs_fp32"] <= 0.02]
    fastest = max(keeps, key=lambda n: speed[n]["heatmap"]["16"])
    result = {
        "model": str(run_dir), "test_images": len(test), "images_per_s": speed, "quality": quality,
        "ort_speedup_batch16": speed["onnxruntime_fp32"]["heatmap"]["16"] / base16,
        "ort_speedup_batch16_predict_only": speed["onnxruntime_fp32"]["predict"]["16"]
        / speed["pytorch_fp32"]["predict"]["16"],
        "fastest_path": fastest,
        "fastest_speedup_batch16": speed[fastest]["heatmap"]["16"] / base16,
        "fastest_auc_delta": quality[fastest]["auc_delta_vs_fp32"],
        "fastest_heatmap_mean_abs_diff": quality[fastest]["heatmap_mean_abs_diff_vs_fp32"],
        "paths_within_limits": keeps,
        "onnx_parity": parity_check(run_dir, onnx_fp32, [s.path for s in test[:64]]),
        "openvino_bf16_runs_in": openvino["bf16"].precision,
        "openvino_cpu_capabilities": openvino_capabilities(),
        "note": "throughputs timed interleaved across runtimes (median of 5); "
                "speed-ups compare predict+heatmap throughput at batch 16 with PyTorch eager fp32 (predict+heatmap); "
                "a path counts only if its test AUC is within 0.002 and its heatmaps within 0.02 (mean abs) of fp32",
    }
    write_result("inference", result)


if __name__ == "__main__":
    main()

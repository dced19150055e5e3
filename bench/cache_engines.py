"""Caching speed per engine: the frozen trunk over real train images, PyTorch against ONNX Runtime.

Each engine fills a fresh cache of the same augmented views (decoding, augmentation and the trunk, as
training does); the times are per view after the engine is ready (the ONNX export is timed apart), and
the two caches are compared value by value.

    python -m bench.cache_engines --model densenet121 [--images 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from bench.common import DATA, DATA_NAME, WEIGHTS, launch_commit, write_result
from pneumoscan import cache  # noqa: E402
from pneumoscan.data import Augmentation, XRayDataset, scan_kaggle_split  # noqa: E402
from pneumoscan.models import build_model  # noqa: E402


def fill_with(engine: str, model, samples, precision: str) -> tuple[np.ndarray, float]:
    """A fresh cache of two augmented views per sample with ``engine``, and the seconds it took."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        acts = cache.cached_activations(model.trunk, samples, model.preprocessing, augmentation=Augmentation(),
                                        views=2, cache_dir=folder, batch_size=64, workers=2,
                                        precision=precision, engine=engine)
        return np.array(acts, dtype=np.float32), time.perf_counter() - started


def export_seconds(model, samples) -> float:
    """Seconds to export the trunk and load it into ONNX Runtime (once per cache)."""
    started = time.perf_counter()
    cache._onnx_runner(model.trunk, XRayDataset(samples[:1], model.preprocessing))
    return time.perf_counter() - started


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="densenet121", choices=["densenet121", "resnet50"])
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()
    model = build_model(args.model, weights=WEIGHTS[args.model], allow_partial_weights=True).eval()
    samples = scan_kaggle_split(DATA, "train")[:: max(1, 5216 // args.images)][: args.images]
    views = 2 * len(samples)
    export = export_seconds(model, samples)
    by_torch, torch_seconds = fill_with("torch", model, samples, "fp32")
    by_ort, ort_seconds = fill_with("onnxruntime", model, samples, "fp32")
    result = {
        "model": args.model, "data": DATA_NAME, "views": views, "batch_size": 64,
        "torch_threads": torch.get_num_threads(),
        "torch_fp32_ms_per_view": 1000 * torch_seconds / views,
        "onnxruntime_fp32_ms_per_view": 1000 * (ort_seconds - export) / views,
        "onnx_export_seconds": export,
        "speedup": torch_seconds / (ort_seconds - export),
        "max_abs_diff": float(np.abs(by_torch - by_ort).max()),
        "max_abs_value": float(np.abs(by_torch).max()),
        "equal_after_float16_storage": float((by_torch == by_ort).mean()),
        "note": "per view: decoding, augmentation and the trunk, as a training run's caching; the ONNX Runtime time "
                "excludes the export, which is measured on its own (once per cache)",
    }
    print(result)
    write_result(f"cache_engines_{args.model}", result)


if __name__ == "__main__":
    main()

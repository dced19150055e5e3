"""Explanation benchmark: parity, speed, sanity, faithfulness, localization and memory of the heatmaps.

    python -m bench.explain [--runs bench/work] [--only speed ...]

Needs the models of the accuracy benchmark (``bench/work/accuracy_<model>``). Writes
``bench/results/explain.json`` (with ``--only``: ``explain_<sections>.json``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import DATA, DATA_NAME, ROOT, WEIGHTS, launch_commit, write_result
from pneumoscan.data import XRayDataset, scan_kaggle_split  # noqa: E402
from pneumoscan.data.synthetic import read_lesion_boxes, write_synthetic_dataset  # noqa: E402
from pneumoscan.explain import explain, gradcam  # noqa: E402
from pneumoscan.explain.checks import (  # noqa: E402
    baseline_maps,
    border_mass,
    box_iou,
    cascading_randomization,
    deletion_insertion,
    pointing_game,
)
from pneumoscan.explain.methods import heatmap_agreement  # noqa: E402
from pneumoscan.explain.run import explain_batches  # noqa: E402
from pneumoscan.models.checkpoint import load_model  # noqa: E402

ARCHS = ("densenet121", "resnet50", "baseline_cnn")
SPEED_REPEATS = 11
SECTIONS = ("parity", "speed", "sanity", "faithfulness", "localization", "memory")
FAITHFULNESS_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "integrated_gradients")


def test_images(model, count: int, seed: int = 0) -> tuple[torch.Tensor, list]:
    samples = scan_kaggle_split(DATA, "test")
    order = np.random.default_rng(seed).permutation(len(samples))[:count]
    chosen = [samples[i] for i in sorted(order)]
    dataset = XRayDataset(chosen, model.preprocessing)
    return torch.stack([dataset[i][0] for i in range(len(dataset))]), chosen


def parity(runs: Path) -> dict:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    result = {}
    for arch in ARCHS:
        model = load_model(runs / f"accuracy_{arch}").model
        images, _ = test_images(model, 32)
        ours = np.concatenate([gradcam(model, images[i:i + 8]).heatmaps for i in range(0, 32, 8)])
        with GradCAM(model=model, target_layers=[model.tail]) as cam:
            theirs = np.concatenate([cam(input_tensor=images[i:i + 8], targets=[BinaryClassifierOutputTarget(1)] * 8)
                                     for i in range(0, 32, 8)])
        result[arch] = float(np.abs(ours - theirs).max())
    return {"images": 32, "per_model": result, "max_abs_diff": max(result.values())}


def _median_seconds(*fns, repeats: int = 5) -> list[float]:
    """Median wall time of each function, after a warm-up; the calls are interleaved, so drift in the
    machine's speed hits all of them alike."""
    times = [[] for _ in fns]
    for fn in fns:
        fn()
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            started = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - started)
    return [statistics.median(t) for t in times]


def _predict_vs_explain(model, images: torch.Tensor, precision: str) -> dict:
    """Batch time of prediction alone and of prediction + fast Grad-CAM, at one precision."""
    fmt = torch.channels_last if precision == "bf16" else torch.contiguous_format
    x, net = images.contiguous(memory_format=fmt), model.to(memory_format=fmt)

    def predict():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            net(x)

    predict_s, explain_s = _median_seconds(predict, lambda: gradcam(net, x, precision=precision),
                                           repeats=SPEED_REPEATS)
    return {"predict_ms": 1000 * predict_s, "predict_and_heatmap_ms": 1000 * explain_s,
            "overhead_ratio": explain_s / predict_s}


def speed(model) -> dict:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    images, _ = test_images(model, 16)
    out = {"batch": 16, "threads": torch.get_num_threads()}
    for precision in ("fp32", "bf16"):
        out[precision] = _predict_vs_explain(model, images, precision)
    model.to(memory_format=torch.contiguous_format)
    with GradCAM(model=model, target_layers=[model.tail]) as cam:
        (library_s,) = _median_seconds(lambda: cam(input_tensor=images, targets=[BinaryClassifierOutputTarget(1)] * 16))
    out["pytorch_grad_cam_ms"] = 1000 * library_s
    out["overhead_ratio"] = out["bf16"]["overhead_ratio"]  # the served path: bf16 + channels_last
    out["speedup_vs_pytorch_grad_cam"] = library_s / (out["fp32"]["predict_and_heatmap_ms"] / 1000)  # same fp32
    return out


def sanity(runs: Path) -> dict:
    result = {}
    for arch in ARCHS:
        model = load_model(runs / f"accuracy_{arch}").model
        images, _ = test_images(model, 16, seed=1)
        curve = cascading_randomization(model, images)
        after = next(row["rank_corr"] for row in curve if row["last_block"])
        result[arch] = {"curve": curve, "rank_corr_after_last_block": after}
    return {"images": 16, "method": "gradcam", "per_model": result,
            "rank_corr_after_last_block": result["densenet121"]["rank_corr_after_last_block"]}


def faithfulness(model, count: int = 200) -> dict:
    images, _ = test_images(model, count, seed=2)
    result = {}
    explained_by_gradcam = None
    for method in (*FAITHFULNESS_METHODS, "random", "center"):
        started = time.perf_counter()
        deletion, insertion = [], []
        for start in range(0, count, 20):
            batch = images[start:start + 20]
            if method in ("random", "center"):
                maps = baseline_maps((len(batch), 224, 224), seed=start)[method]
                batch_explained = explained_by_gradcam[start:start + 20]
            else:
                explained = explain(model, batch, method=method, target="predicted",
                                    precision="bf16" if method == "integrated_gradients" else "fp32")
                maps, batch_explained = explained.heatmaps, explained.explained
            scores = deletion_insertion(model, batch, maps, batch_explained)
            deletion += list(scores["deletion_auc"])
            insertion += list(scores["insertion_auc"])
            if method == "gradcam":
                explained_by_gradcam = (batch_explained if explained_by_gradcam is None
                                        else np.concatenate([explained_by_gradcam, batch_explained]))
        result[method] = {"deletion_auc": float(np.mean(deletion)), "insertion_auc": float(np.mean(insertion)),
                          "seconds": round(time.perf_counter() - started, 1)}
        logging.info("faithfulness %s: %s", method, result[method])
    result["images"] = count
    result["gradcam_beats_baselines"] = all(
        result["gradcam"]["deletion_auc"] < result[b]["deletion_auc"]
        and result["gradcam"]["insertion_auc"] > result[b]["insertion_auc"] for b in ("random", "center"))
    result["road"] = road(model, images[:64])
    return result


def road(model, images: torch.Tensor) -> dict:
    """pytorch-grad-cam's ROAD (remove and debias; most-relevant-first minus least-relevant-first)."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    explained = gradcam(model, images, target="predicted")
    targets = [BinaryClassifierOutputTarget(int(s > 0)) for s in explained.signs]
    metric = ROADCombined(percentiles=[20, 40, 60, 80])
    maps = {"gradcam": explained.heatmaps, **baseline_maps(explained.heatmaps.shape)}
    return {"images": len(images), **{name: float(np.mean(metric(images, m, targets, model)))
                                      for name, m in maps.items()},
            "note": "higher is better: confidence kept when the least relevant pixels go, minus when the most do"}


def localization(runs: Path, work: Path) -> dict:
    """Pointing game and IoU on phantoms with known lesions; border mass on the real test split."""
    from pneumoscan.train import TrainConfig, train
    from pneumoscan.train.config import HeadStage, TailStage

    root = work / "phantoms"
    if not (root / "lesions.csv").exists():
        write_synthetic_dataset(root, n_train=600, n_test=200, seed=5)
    run = work / "phantom_densenet"
    if not (run / "model.pt").exists():
        train(TrainConfig(data=str(root), out=str(run), model="densenet121", weights=str(WEIGHTS["densenet121"]),
                          train_views=2, head=HeadStage(epochs=15), tail=TailStage(epochs=6), n_boot=100,
                          cache_dir=str(work / "cache"), shift_report=False), resume=(run / "config.json").exists())
    loaded = load_model(run)
    boxes = read_lesion_boxes(root)
    positives = [s for s in scan_kaggle_split(root, "test") if s.label == 1]
    hits, ious = [], []
    for item in explain_batches(loaded, [s.path for s in positives], target="PNEUMONIA"):
        hits.append(pointing_game(item.heatmap, boxes[item.path]))
        ious.append(box_iou(item.heatmap, boxes[item.path]))
    border = {}
    agreement = []
    maps_by_arch = {}
    samples = scan_kaggle_split(DATA, "test")
    for arch in ARCHS:
        loaded_arch = load_model(runs / f"accuracy_{arch}")
        maps = [item.heatmap for item in explain_batches(loaded_arch, [s.path for s in samples], target="PNEUMONIA")]
        maps_by_arch[arch] = maps
        border[arch] = float(np.nanmean(border_mass(np.stack(maps))))
    for a, b in zip(maps_by_arch["densenet121"], maps_by_arch["resnet50"]):
        agreement.append(heatmap_agreement(a, b))
    return {"phantom_model": "densenet121 (ImageNet) trained on 600 phantoms", "phantom_test_positives": len(positives),
            "pointing_game": float(np.mean(hits)), "mean_iou": float(np.mean(ious)),
            "border_band": 0.08, "border_mass": border, "border_mass_uniform_map": 1 - (1 - 2 * 0.08) ** 2,
            "densenet_vs_resnet_agreement": {"images": len(agreement),
                                             "mean_spearman": float(np.mean([r["spearman"] for r in agreement])),
                                             "mean_top20_iou": float(np.mean([r["top_iou"] for r in agreement]))}}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(runs: Path, count: int = 1000) -> dict:
    loaded = load_model(runs / "accuracy_densenet121")
    paths = [s.path for s in scan_kaggle_split(DATA, "test")]
    paths = (paths * (count // len(paths) + 1))[:count]
    samples_mb = []
    for i, _ in enumerate(explain_batches(loaded, paths, batch_size=16, target="PNEUMONIA")):
        if i == 64:
            gc.collect()
            start = rss_mb()
        if i % 100 == 0:
            samples_mb.append(round(rss_mb(), 1))
    gc.collect()
    return {"images": count, "rss_start_mb": start, "rss_end_mb": rss_mb(), "rss_samples_mb": samples_mb,
            "note": "start measured after the first 64 images (model loaded, first batches done)"}


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", default=str(ROOT / "bench" / "work"))
    parser.add_argument("--faithfulness-images", type=int, default=200)
    parser.add_argument("--only", choices=SECTIONS, nargs="+",
                        help="run these sections only; the result goes to explain_<sections>.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    runs = Path(args.runs)
    started = time.perf_counter()
    densenet = load_model(runs / "accuracy_densenet121").model
    result = {"data": DATA_NAME, "models": {a: str(runs / f"accuracy_{a}") for a in ARCHS}}
    sections = {"parity": lambda: parity(runs), "speed": lambda: speed(densenet), "sanity": lambda: sanity(runs),
                "faithfulness": lambda: faithfulness(densenet, args.faithfulness_images),
                "localization": lambda: localization(runs, runs / "explain"), "memory": lambda: memory(runs)}
    for name in args.only or SECTIONS:
        section_started = time.perf_counter()
        result[name] = sections[name]()
        result[name]["seconds"] = round(time.perf_counter() - section_started, 1)
        logging.info("%s done in %.0f s", name, result[name]["seconds"])
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_result("_".join(["explain", *args.only]) if args.only else "explain", result)


if __name__ == "__main__":
    main()

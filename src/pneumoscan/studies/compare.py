"""``pneumoscan compare``: several models under one protocol, with error bars and paired tests.

Every model is trained with the same settings (same patient-level split for a given seed, same
augmentation, epoch budget and threshold rule) and evaluated on the same test images. With several
seeds, each metric is reported as mean +- std; each pair of models gets DeLong's test of their AUCs
and McNemar's test of their errors at the chosen thresholds, per seed (more than two classes: McNemar's
test of the arg-max errors and a paired bootstrap interval of the accuracy difference). An optional ablation trains
DenseNet121 end to end from ImageNet weights and from random init at a reduced budget.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pneumoscan.device import pick_device
from pneumoscan.evaluate.multiclass import paired_comparison, read_multiclass_predictions
from pneumoscan.evaluate.plots import plot_roc
from pneumoscan.evaluate.report import read_called, read_predictions, write_json
from pneumoscan.evaluate.stats import delong_test, mcnemar_test
from pneumoscan.models.checkpoint import load_model
from pneumoscan.models.networks import count_parameters
from pneumoscan.run_folder import RunFolder
from pneumoscan.settings import load_settings
from pneumoscan.studies.compare_report import BINARY_METRICS, comparison_markdown
from pneumoscan.train import TrainConfig, train

log = logging.getLogger(__name__)

METRICS = BINARY_METRICS  # two classes
MULTICLASS_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auc")


@dataclass(frozen=True)
class CompareConfig:
    """Settings of ``pneumoscan compare``."""

    data: str = ""                     # dataset root with train/ and test/
    out: str = "runs/compare"
    models: tuple[str, ...] = ("densenet121", "resnet50", "baseline_cnn")
    seeds: int = 1                     # repeats per model (seeds 0..n-1): mean +- std
    weights: tuple[str, ...] = ()      # per-model weights, "densenet121=/path.pth"; default: imagenet
    base_config: str = ""              # a train --config JSON applied to every model (one protocol)
    precision: str = ""                # "" = each run's config (bf16 where native); "fp32" keeps later runs in the
                                       # precision of runs made on a CPU without native bf16
    cache_dir: str = ""                # activation cache shared by the runs ("" = the train default); may
                                       # contain {model}, e.g. "cache/{model}"
    ablation: bool = False             # also: DenseNet121 from ImageNet vs random init, end to end
    ablation_image_size: int = 0       # ablation budget: 0 = 224 px with a GPU, 112 px on a CPU
    ablation_epochs: int = 0           # 0 = 12 epochs with a GPU, 6 on a CPU (stated in the output)


def _train_config(config: CompareConfig, model: str, seed: int, out: Path) -> TrainConfig:
    weights = dict(item.split("=", 1) for item in config.weights)
    overrides = {"data": config.data, "model": model, "seed": seed, "out": str(out)}
    if model in weights:
        overrides.update(weights=weights[model], allow_partial_weights=True)
    if config.cache_dir:
        overrides["cache_dir"] = config.cache_dir.format(model=model)
    if config.precision:
        overrides["precision"] = config.precision
    return load_settings(TrainConfig, file=config.base_config or None, overrides=overrides)


def _inference_ms(model: torch.nn.Module, paths: list[str], precision: str) -> float:
    """CPU inference time per image (batch 16) in the precision the run was made in."""
    from pneumoscan.inference.predict import predict_logits

    predict_logits(model, paths[:16], batch_size=16, precision=precision)  # warm-up
    started = time.perf_counter()
    predict_logits(model, paths, batch_size=16, precision=precision)
    return 1000 * (time.perf_counter() - started) / len(paths)


def train_or_reuse(config: TrainConfig) -> bool:
    """Train one run, resuming a killed one; a finished run is reused. True when it had finished earlier."""
    folder = RunFolder(config.out)
    if folder.finished():
        return True
    train(config, resume=folder.config.exists())
    return False


def run_one(config: TrainConfig) -> dict:
    """Train one model (or reuse a finished run) and collect what the comparison needs."""
    folder = RunFolder(config.out)
    started = time.perf_counter()
    finished_earlier = train_or_reuse(config)
    metrics = json.loads(folder.metrics.read_text())
    binary = "at_threshold" in metrics["test"]
    loaded = load_model(folder.root)
    names = tuple(loaded.classes.names)  # the run's own class names, whatever the task
    read = read_predictions if binary else read_multiclass_predictions
    paths, y, prob = read(folder.predictions("test"), names)
    called = read_called(folder.predictions("test"), names)  # the screening's decisions
    keys = METRICS if binary else MULTICLASS_METRICS  # what metrics_of reads back from the summary
    model = loaded.model
    test = metrics["test"]["at_threshold" if binary else "at_argmax"]
    return {"run": str(folder.root), "seed": config.seed, "threshold": metrics.get("threshold"),  # None: arg-max
            **{k: test[k] for k in keys}, "ci95": {k: test["ci95"][k] for k in keys},
            "train_seconds": metrics["timings"]["total_seconds"],  # of the invocation that finished it
            "wall_seconds": round(time.perf_counter() - started, 1),
            "finished_earlier": finished_earlier, "resumed": bool(metrics["timings"].get("resumed")),
            "device": metrics.get("device"), "precision": metrics.get("precision"),
            "parameters": count_parameters(model),
            "inference_ms_per_image": _inference_ms(model, paths[:64], metrics.get("precision") or "bf16"),
            "paths": paths, "y": y, "prob": prob, "called": called}


def metrics_of(run: dict) -> tuple[str, ...]:
    """The metrics a run's summary reports: two classes have an AUC, more have macro averages."""
    return METRICS if "auc" in run else MULTICLASS_METRICS


def seed_summary(runs: list[dict]) -> dict:
    out = {k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs], ddof=1))
               if len(runs) > 1 else 0.0, "values": [r[k] for r in runs]} for k in metrics_of(runs[0])}
    out["ci95_seed0"] = runs[0]["ci95"]
    for key in ("parameters", "inference_ms_per_image", "threshold"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    # a seed that finds the model's activation cache already on disk skips the view caching, so the slowest seed is
    # the cost of a run from a cold cache and the mean understates it; a run whose time is not known (None) is
    # left out of both
    timed = [r["train_seconds"] for r in runs if r["train_seconds"] is not None]
    out["train_seconds"] = float(np.mean(timed)) if timed else None
    out["train_seconds_max"] = float(max(timed)) if timed else None
    out["train_seconds_per_seed"] = [r["train_seconds"] for r in runs]
    out["precision_per_seed"] = [r.get("precision") for r in runs]
    return out


def same_images(a: dict, b: dict) -> tuple[dict, dict]:
    """Two runs' test predictions restricted to the images both scored, in one order (a run's input
    checks may refuse an image the other scores)."""
    rows_a = rows_b = slice(None)  # records kept before paths were: every image, in one order
    if "paths" in a and "paths" in b:
        index_b = {p: i for i, p in enumerate(b["paths"])}
        rows_a = [i for i, p in enumerate(a["paths"]) if p in index_b]
        rows_b = [index_b[a["paths"][i]] for i in rows_a]
    return ({k: np.asarray(a[k])[rows_a] for k in ("y", "prob", "called")},
            {k: np.asarray(b[k])[rows_b] for k in ("y", "prob", "called")})


def _pair_tests(a_runs: list[dict], b_runs: list[dict]) -> dict:
    pairs = [same_images(a, b) for a, b in zip(a_runs, b_runs)]
    if metrics_of(a_runs[0]) is MULTICLASS_METRICS:
        return _multiclass_pair_tests(pairs)
    delong = [delong_test(a["y"], a["prob"], b["prob"]) for a, b in pairs]
    mcnemar = [mcnemar_test(a["y"], a["called"], b["called"]) for a, b in pairs]
    return {"delong_p": float(np.median([d["p_value"] for d in delong])),
            "delong_p_per_seed": [d["p_value"] for d in delong],
            "auc_difference_per_seed": [d["difference"] for d in delong],
            "mcnemar_p": float(np.median([m["p_value"] for m in mcnemar])),
            "mcnemar_p_per_seed": [m["p_value"] for m in mcnemar],
            "significant_seeds_0.05": {"delong": sum(d["p_value"] < 0.05 for d in delong),
                                       "mcnemar": sum(m["p_value"] < 0.05 for m in mcnemar)}}


def _multiclass_pair_tests(pairs: list[tuple[dict, dict]]) -> dict:
    tests = [paired_comparison(a["y"], a["prob"], b["prob"]) for a, b in pairs]
    return {"mcnemar_p": float(np.median([t["mcnemar"]["p_value"] for t in tests])),
            "mcnemar_p_per_seed": [t["mcnemar"]["p_value"] for t in tests],
            "accuracy_difference_per_seed": [t["accuracy_difference"] for t in tests],
            "accuracy_difference_ci95_per_seed": [t["accuracy_difference_ci95"] for t in tests],
            "macro_f1_difference_ci95_per_seed": [t["macro_f1_difference_ci95"] for t in tests],
            "significant_seeds_0.05": {"mcnemar": sum(t["mcnemar"]["p_value"] < 0.05 for t in tests)}}


def side_by_side(runs: dict[str, list[dict]]) -> dict:
    """The metrics, each model's summary over its seeds and the paired tests of every two models, from
    ``run_one`` summaries (seed ``i`` of one model paired with seed ``i`` of another)."""
    return {"metrics": list(metrics_of(next(iter(runs.values()))[0])),
            "models": {m: seed_summary(r) for m, r in runs.items()},
            "pairs": {f"{a}_vs_{b}": _pair_tests(runs[a], runs[b]) for a, b in itertools.combinations(runs, 2)}}


def ablation_budget(config: CompareConfig, device: torch.device) -> tuple[int, int]:
    """(image size, epochs) of the ablation: the recipe's with a GPU, a reduced one on a CPU, unless set."""
    gpu = device.type == "cuda"
    return (config.ablation_image_size or (224 if gpu else 112), config.ablation_epochs or (12 if gpu else 6))


def ablation_runs(config: CompareConfig) -> list[tuple[str, str, TrainConfig]]:
    """(init, run name, settings) of the pretraining ablation: DenseNet121 trained end to end from ImageNet
    weights and from random init (budget: ablation_budget).

    Finished runs are reused wherever they were made (a comparison on a CPU can take the ablation runs
    made on a GPU); the budget reported is the one each run's own config and metrics record.
    """
    out = Path(config.out)
    weights = dict(item.split("=", 1) for item in config.weights).get("densenet121", "imagenet")
    device = pick_device(_train_config(config, "densenet121", 0, out).device)
    image_size, epochs = ablation_budget(config, device)
    runs = []
    for name, init in (("imagenet", weights), ("random_init", "none")):
        base = _train_config(config, "densenet121", 0, out / "ablation" / name)
        runs.append((name, f"ablation_{name}", replace(
            base, weights=init, stages=("full",), image_size=image_size, shift_report=False, patience=epochs,
            full=replace(base.full, epochs=epochs, lr=1e-4 if init != "none" else 1e-3))))
    return runs


def ablation_result(summaries: dict[str, dict]) -> dict:
    """The ablation's section of the result, from each init's run summary (``train_ablation_run``)."""
    results = {name: {**{k: record[k] for k in (*METRICS, "train_seconds", "threshold", "device", "budget")},
                      "finished_earlier": record.get("finished_earlier", False)} for name, record in summaries.items()}
    results["budget"] = "; ".join(sorted({r.pop("budget") for r in results.values()}))
    return results


def train_ablation_run(settings: TrainConfig) -> dict:
    train_or_reuse(settings)
    return ablation_run_summary(Path(settings.out))


def ablation_run_summary(run_dir: Path) -> dict:
    """Test metrics, training time and the budget (epochs, image size, device) of one finished ablation run."""
    folder = RunFolder(run_dir)
    metrics, settings = json.loads(folder.metrics.read_text()), json.loads(folder.config.read_text())
    device = metrics.get("device", "an unrecorded device")
    reduced = "" if device.startswith("cuda") else " (a reduced budget that fits a CPU; use a GPU for the full recipe)"
    test = metrics["test"]["at_threshold"]
    return {**{k: test[k] for k in METRICS}, "train_seconds": metrics["timings"]["total_seconds"],
            "threshold": metrics["threshold"], "device": device,
            "budget": f"end-to-end training of every layer for {_full_epochs(settings)} epochs at "
                      f"{settings['image_size']}x{settings['image_size']} px on {device}{reduced}"}


def comparison_runs(config: CompareConfig) -> list[tuple[str, str, TrainConfig]]:
    """(model, run name, settings) of every run, seed by seed, so an interrupted comparison has every model's
    seed 0."""
    out = Path(config.out)
    return [(model, f"{model}_seed{seed}", _train_config(config, model, seed, out / model / f"seed{seed}"))
            for seed in range(config.seeds) for model in config.models]


def compare(config: CompareConfig) -> dict:
    """Train (or reuse) every run, then write ``comparison.json``, ``comparison.md`` and ``roc_all.png`` to
    ``out``."""
    started = time.perf_counter()
    runs = {model: [] for model in config.models}
    for model, _, settings in comparison_runs(config):
        runs[model].append(run_one(settings))
    ablation = ({name: train_ablation_run(settings) for name, _, settings in ablation_runs(config)}
                if config.ablation else None)
    return write_comparison(config, runs, ablation, started)


def write_comparison(config: CompareConfig, runs: dict[str, list[dict]], ablation: dict[str, dict] | None,
                     started: float) -> dict:
    """The comparison of the runs' summaries (``run_one``'s, by model) and the ablation's, written to ``out``."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"protocol": {"models": list(config.models), "seeds": config.seeds,
                           "base_config": config.base_config or "TrainConfig defaults",
                           "note": "same patient-level split per seed, same augmentation, epoch budget and "
                                   "threshold rule for every model; test used only for this report"},
              **side_by_side(runs)}
    if ablation:
        result["pretraining_ablation"] = ablation_result(ablation)
    every_run = [r for model_runs in runs.values() for r in model_runs]
    ablation_summaries = [v for v in result.get("pretraining_ablation", {}).values() if isinstance(v, dict)]
    result["invocation_seconds"], result["wall_seconds"] = total_seconds(every_run + ablation_summaries, started)
    result["runs"] = {"total": len(every_run), "finished_earlier": sum(r["finished_earlier"] for r in every_run),
                      "resumed_after_a_kill": sum(r["resumed"] for r in every_run),
                      "train_seconds_sum": round(sum(r["train_seconds"] or 0.0 for r in every_run), 1),
                      "note": "train_seconds of a run cover its caching, training and evaluation (a run resumed "
                              "after a kill sums its invocations' spans in its train.log); wall_seconds is the "
                              "whole comparison: every run's train_seconds, the ablation's included, plus the "
                              "rest of this invocation (invocation_seconds, which reuses runs finished earlier)"}
    if result["metrics"] == list(METRICS):  # two classes: one ROC curve per model (each multi-class run has its
        # per-class curves in its own plots)
        curves = {f"{m} (AUC {r[0]['auc']:.3f})": (r[0]["y"], r[0]["prob"]) for m, r in runs.items()}  # seed 0's
        plot_roc(curves, out / "roc_all.png", title="ROC on the test split (seed 0)")
    write_json(out / "comparison.json", result)
    (out / "comparison.md").write_text(comparison_markdown(result))
    return result


def _full_epochs(settings: dict) -> int:
    """Stage full's epochs in a run's config.json."""
    return settings["full"]["epochs"]


def total_seconds(runs: list[dict], started: float) -> tuple[float, float]:
    """(this invocation's seconds, the whole comparison's): the runs' own times, wherever and whenever they
    were trained, plus what this invocation spent besides training runs."""
    invocation = time.perf_counter() - started
    trained_now = sum(r["train_seconds"] or 0.0 for r in runs if not r["finished_earlier"])
    total = sum(r["train_seconds"] or 0.0 for r in runs) + max(invocation - trained_now, 0.0)
    return round(invocation, 1), round(total, 1)

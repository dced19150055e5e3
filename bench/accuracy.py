"""Accuracy benchmark: one model trained on the real dataset, test split touched once at the end.

    python -m bench.accuracy --model densenet121 [--recipe NAME] [--set key=value ...]

Writes ``bench/results/accuracy_<model>.json`` with the test metrics at the validation-chosen
threshold (and at 0.5), the wall time of the whole run (caching, stages, evaluation), the timings
per phase, and the fp32-vs-bf16 check of the final model on validation.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from bench.common import DATA, DATA_NAME, ROOT, WEIGHTS, launch_commit, write_result
from pneumoscan.data import read_split  # noqa: E402
from pneumoscan.device import pick_device  # noqa: E402
from pneumoscan.evaluate import binary_metrics  # noqa: E402
from pneumoscan.inference.predict import predict_logits, sigmoid  # noqa: E402
from pneumoscan.models.checkpoint import load_model  # noqa: E402
from pneumoscan.models.networks import count_parameters  # noqa: E402
from pneumoscan.settings import load_settings, parse_overrides, to_dict  # noqa: E402
from pneumoscan.storage import cache_bytes  # noqa: E402
from pneumoscan.train import TrainConfig, train  # noqa: E402
from pneumoscan.train.recipes import chosen_recipe, recipe_settings  # noqa: E402


def precision_check(run_dir: Path) -> dict:
    """Validation AUC and accuracy of the final model with fp32 and with bf16 + channels_last inference."""
    loaded = load_model(run_dir)
    val = read_split(run_dir / "split.csv")["val"]
    y = np.array([s.label for s in val])
    out = {}
    for precision in ("fp32", "bf16"):
        started = time.perf_counter()
        prob = sigmoid(predict_logits(loaded.model, [s.path for s in val], precision=precision, workers=2)[0])
        m = binary_metrics(y, prob, loaded.threshold)
        out[precision] = {"val_auc": m["auc"], "val_accuracy": m["accuracy"],
                          "ms_per_image": 1000 * (time.perf_counter() - started) / len(val)}
    out["auc_delta"] = out["bf16"]["val_auc"] - out["fp32"]["val_auc"]
    return out


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="densenet121", choices=["densenet121", "resnet50", "baseline_cnn"])
    parser.add_argument("--recipe", default="auto", help="a named recipe (train.recipes); auto = the best validated "
                                                          "one for the model on this device, as pneumoscan train does")
    parser.add_argument("--config", help="a TrainConfig JSON (e.g. the best configuration from tuning)")
    parser.add_argument("--set", nargs="*", default=[], help="extra settings, KEY=VALUE")
    parser.add_argument("--out", default=str(ROOT / "bench" / "work"))
    parser.add_argument("--name", help="result name (default accuracy_<model>)")
    parser.add_argument("--keep-cache", action="store_true", help="reuse a warm activation cache (not a cold run)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    run_dir = Path(args.out) / (args.name or f"accuracy_{args.model}")
    cache_dir = Path(args.out) / "cache" / args.model  # per model: a cold run clears only its own cache
    shutil.rmtree(run_dir, ignore_errors=True)
    if not args.keep_cache:
        shutil.rmtree(cache_dir, ignore_errors=True)  # a cold run: the time includes all caching
    overrides = {"data": str(DATA), "model": args.model, "out": str(run_dir), "cache_dir": str(cache_dir)}
    if args.model in WEIGHTS:
        overrides.update(weights=str(WEIGHTS[args.model]), allow_partial_weights=args.model == "resnet50")
    overrides.update(parse_overrides(args.set))
    probe = load_settings(TrainConfig, file=args.config, overrides=overrides)
    recipe = chosen_recipe(args.recipe, args.model, pick_device(probe.device).type)
    config = load_settings(TrainConfig, base=recipe_settings(recipe), file=args.config, overrides=overrides)

    started = time.perf_counter()
    train(config)
    wall = time.perf_counter() - started
    metrics = json.loads((run_dir / "metrics.json").read_text())
    loaded = load_model(run_dir)
    test, val = metrics["test"], metrics["validation"]

    def pick(block):
        keys = ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1", "average_precision")
        return {**{k: block[k] for k in keys}, "ci95": {k: block["ci95"][k] for k in keys if k in block["ci95"]},
                "confusion_matrix": block["confusion_matrix"]}

    result = {
        "model": args.model,
        "recipe": recipe,
        "data": DATA_NAME,
        "weights": overrides.get("weights", "none"),
        "weights_note": "ResNet50: ImageNet weights through layer3 only (partial file); layer4 trained from scratch"
        if args.model == "resnet50" else None,
        "protocol": "patient-level validation carved from train; threshold chosen on validation only; "
                    "test split evaluated once at the end",
        "settings": to_dict(config.resolved()),
        "parameters": count_parameters(loaded.model),
        "trainable_parameters_stage2": count_parameters(loaded.model.tail) + count_parameters(loaded.model.head),
        "threshold": metrics["threshold"],
        "threshold_rule": metrics["threshold_rule"],
        "threshold_on": metrics.get("threshold_on"),
        "threshold_ci95": metrics.get("threshold_ci95"),
        "test": pick(test["at_threshold"]),
        "test_at_0.5": pick(test["at_0.5"]),
        "validation": pick(val["at_threshold"]),
        "validation_shifted": {k: v for k, v in metrics.get("validation_shifted", {}).items() if k != "shifts"},
        "timings_seconds": metrics["timings"],
        "wall_seconds": round(wall, 1),
        "cache_bytes": cache_bytes(cache_dir),
        "precision_check": precision_check(run_dir),
    }
    write_result(args.name or f"accuracy_{args.model}", result)


if __name__ == "__main__":
    main()

"""Spread of one training recipe over seeds: is a result the recipe's, or one lucky run's?

    python -m bench.seeds --config bench/configs/densenet121_tuned.json --seeds 5 --name seeds_densenet121_tuned

Trains the recipe with seeds 0..N-1 (each seed draws its own patient-level split, initialisation, batch
order and choice among the cached augmented views), each thresholded on its own validation and tested
once, then writes ``bench/results/<name>.json`` with every seed's test metrics and their mean, std, min
and max. Finished runs are reused and killed ones resumed, so a long study can be spread over several
invocations.

With ``--shared-split`` every seed trains on seed 0's patient split, so the runs can be ensembled
(``bench/ensemble.py``): members with their own splits would each have trained on patients that sit in
another member's validation, and no validation would be left to choose the ensemble's threshold on.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from bench.common import DATA, DATA_NAME, ROOT, WEIGHTS, launch_commit, write_result
from bench.timing import training_seconds  # noqa: E402
from pneumoscan.settings import load_settings, parse_overrides, to_dict  # noqa: E402
from pneumoscan.studies.compare import train_or_reuse  # noqa: E402
from pneumoscan.train import TrainConfig  # noqa: E402

KEYS = ("auc", "accuracy", "sensitivity", "specificity", "f1")


def run_seed(config: TrainConfig) -> dict:
    """Train (or reuse, or resume) one seed's run; its test metrics at its validation threshold."""
    run_dir = Path(config.out)
    train_or_reuse(config)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]["at_threshold"]
    return {"seed": config.seed, "threshold": metrics["threshold"], **{k: test[k] for k in KEYS},
            "train_seconds": training_seconds(run_dir)}


def seed_overrides(seed: int, study: Path, shared_split: bool) -> dict:
    """Where one seed's run goes, and (``shared_split``, seeds after 0) the split it reuses."""
    overrides = {"seed": seed, "out": str(study / f"seed{seed}")}
    if shared_split and seed > 0:
        overrides["split"] = str(study / "seed0" / "split.csv")
    return overrides


def protocol(shared_split: bool) -> str:
    split = ("one patient-level split for every seed (seed 0's); each seed its own initialisation and batch order"
             if shared_split else "each seed: its own patient-level split")
    return (f"{split}, threshold on its validation (and validation shifts), test evaluated once; nothing chosen "
            "after looking at test")


def spread(runs: list[dict]) -> dict:
    return {k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs], ddof=1)),
                "min": float(np.min([r[k] for r in runs])), "max": float(np.max([r[k] for r in runs]))}
            for k in KEYS}


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="densenet121", choices=["densenet121", "resnet50", "baseline_cnn"])
    parser.add_argument("--config", help="a TrainConfig JSON: the recipe")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], help="extra settings, KEY=VALUE")
    parser.add_argument("--out", default=str(ROOT / "bench" / "work"))
    parser.add_argument("--name", default="seeds")
    parser.add_argument("--shared-split", action="store_true",
                        help="every seed trains on seed 0's patient split (runs meant for one ensemble)")
    parser.add_argument("--note", default="", help="where the runs were trained, when not on this machine")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    overrides = {"data": str(DATA), "model": args.model, "cache_dir": str(Path(args.out) / "cache" / args.model)}
    if args.model in WEIGHTS:
        overrides.update(weights=str(WEIGHTS[args.model]), allow_partial_weights=args.model == "resnet50")
    overrides.update(parse_overrides(args.set))
    started = time.perf_counter()
    study = Path(args.out) / args.name
    runs = [run_seed(load_settings(TrainConfig, file=args.config, overrides={
        **overrides, **seed_overrides(seed, study, args.shared_split)})) for seed in range(args.seeds)]
    recipe = load_settings(TrainConfig, file=args.config, overrides=overrides)
    write_result(args.name, {
        "model": args.model, "data": DATA_NAME, "recipe": args.config,
        "settings": {k: v for k, v in to_dict(recipe).items() if k not in ("data", "out", "seed", "cache_dir")},
        "protocol": protocol(args.shared_split),
        "seeds": runs, "spread": spread(runs),
        "seeds_reaching": {"accuracy_0.93": sum(r["accuracy"] >= 0.93 for r in runs),
                           "auc_0.97": sum(r["auc"] >= 0.97 for r in runs),
                           "sensitivity_0.95": sum(r["sensitivity"] >= 0.95 for r in runs)},
        "wall_seconds": round(time.perf_counter() - started, 1), "note": args.note})


if __name__ == "__main__":
    main()

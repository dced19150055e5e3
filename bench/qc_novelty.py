"""How many principal directions the novelty score reads: a sweep on fitting data only.

    python -m bench.qc_novelty --run runs/kermany_dn121 [--components 8 16 32 64 128 256 0]

For a finished Kermany run, computes once the features ``bench.qc``'s refit uses (clean training and
validation images, their resampled copies, the adult fit half) and the 16 official val images at original
aspect (``chest_xray_orig256/val``, the non-test example of another resizing chain), then fits the novelty
Gaussian as the input checks do for each number of components (0: all of them) and reports what it flags.
No test image is read. Writes ``bench/results/qc_novelty.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, launch_commit, write_result
from bench.qc import ORIG256, adult_halves
from pneumoscan.check_fitting import fit_logistic, fit_shift, model_features, resampled_features
from pneumoscan.data import scan_kaggle_split
from pneumoscan.data.io import load_image
from pneumoscan.data.split import read_split
from pneumoscan.device import pick_device
from pneumoscan.input_checks import (
    FLAG_ABOVE,
    POPULATION_LIMIT,
    InputCheckSettings,
    PopulationShift,
    logistic_probability,
)
from pneumoscan.run_folder import RunFolder
from pneumoscan.train.finish import split_features
from pneumoscan.train.setup import run_config, trained_model


def features_of(run: Path, settings: InputCheckSettings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(trunk, last) pooled features of every set the sweep reads."""
    config = run_config(run)
    device = pick_device(config.device)
    model = trained_model(run).to(device)
    splits = read_split(RunFolder(run).split)
    train, val = split_features(model, config, splits, device)
    options = {"precision": config.precision, "device": device}
    adult_fit, _, _ = adult_halves()
    orig_val = [s.path for s in scan_kaggle_split(ORIG256, "val")]
    return {
        "train": train, "val": val,
        "train_copies": resampled_features(model, [s.path for s in splits["train"]], settings.resampled_examples,
                                           **options),
        "val_copies": resampled_features(model, [s.path for s in splits["val"]], settings.resampled_examples // 2,
                                         **options),
        "adult_fit": model_features(model, [load_image(p) for p in adult_fit], **options),
        "orig256_val": model_features(model, [load_image(p) for p in orig_val], **options),
    }


def sweep(sets: dict[str, tuple[np.ndarray, np.ndarray]], components: list[int], quantile: float,
          population_c: float) -> dict:
    trunk = {name: both[0] for name, both in sets.items()}
    last = {name: both[1] for name, both in sets.items()}
    weight, bias = fit_logistic(last["adult_fit"], np.concatenate([last["train"], last["train_copies"]]),
                                c=population_c)
    checked = ("val", "val_copies", "orig256_val")
    classifier = {name: round(float((logistic_probability(last[name], weight, bias) > POPULATION_LIMIT).mean()), 4)
                  for name in checked}
    rows = {}
    for k in components:
        shift = fit_shift(np.concatenate([trunk["train"], trunk["train_copies"]]),
                          np.concatenate([trunk["val"], trunk["val_copies"]]), quantile=quantile,
                          components=k or None)
        ratio = {name: shift.novelty(features) / shift.threshold for name, features in trunk.items()}
        with_classifier = PopulationShift(shift.mean, shift.precision, shift.threshold, quantile, weight, bias)
        flagged = {name: with_classifier.score(trunk[name], last[name]) > FLAG_ABOVE for name in checked}
        rows[str(k or "all")] = {
            "novelty_flagged": {name: round(float((r > FLAG_ABOVE).mean()), 4) for name, r in ratio.items()},
            "novelty_median_ratio": {name: round(float(np.median(r)), 3) for name, r in ratio.items()},
            "flagged_with_classifier": {name: round(float(f.mean()), 4) for name, f in flagged.items()},
            "orig256_val_flagged": int(flagged["orig256_val"].sum()),
        }
        print(k or "all", rows[str(k or "all")])
    return {"rows": rows, "classifier_alone_flagged": classifier}


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "runs" / "kermany_dn121"))
    parser.add_argument("--components", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256, 0])
    args = parser.parse_args()
    started = time.perf_counter()
    settings = InputCheckSettings()
    sets = features_of(Path(args.run), settings)
    result = {"run": args.run, "sizes": {name: len(both[0]) for name, both in sets.items()},
              "novelty_quantile": settings.novelty_quantile,
              "note": "novelty limit at the quantile of validation and its resampled copies; the classifier is "
                      "fitted on the adult fit half (so its flags of that half are not reported); no test image read",
              **sweep(sets, args.components, settings.novelty_quantile, settings.population_c),
              "wall_seconds": round(time.perf_counter() - started, 1)}
    write_result("qc_novelty", result)


if __name__ == "__main__":
    main()

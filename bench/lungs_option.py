"""Lung-field preprocessing (``--set lungs=none|crop|mask``) measured: the ``lungs_option`` block of
``bench/results/anatomy.json``.

    python -m bench.lungs_option [--recipe quick] [--options none crop mask] [--reuse]

Each option trains DenseNet121 on the Kermany training split with the recipe (the quick recipe by default:
the head on the clean films' frozen features), with the shipped lung segmenter (``bench.anatomy``'s
``lungs_balanced`` run) in front of the trunk for ``crop`` and ``mask``, as a user runs it (a subprocess, timed).
Every run chooses its threshold on its validation split and is evaluated once on the test split. The block
records each option's validation AUC, test AUC and accuracy at the validation threshold, and where its
Grad-CAM falls on the Kermany test films with human lung masks (``explain.anatomy.anatomy_review``: heat in the
lungs on the films it calls PNEUMONIA, against the lungs' share). The default is the option with the best
validation AUC; the test numbers never choose.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.anatomy import LUNG_MASKS, SEGMENTER, WORK
from bench.common import DATA, RESULTS, WEIGHTS, launch_commit, write_result

OPTIONS = ("none", "crop", "mask")


def train(option: str, recipe: str, reuse: bool) -> dict:
    """Train (or, with ``reuse``, read) the run of one option; returns its folder and wall time."""
    run = WORK / "lungs_option" / f"{recipe}_{option}"
    if reuse and (run / "model.pt").exists():
        return {"run": run, "train_seconds": json.loads((run / "bench.json").read_text())["train_seconds"]}
    started = time.perf_counter()
    command = [sys.executable, "-m", "pneumoscan.cli", "train", "--data", str(DATA), "--out", str(run),
               "--model", "densenet121", "--weights", str(WEIGHTS["densenet121"]), "--recipe", recipe,
               "--set", f"segmenter={SEGMENTER}", f"lungs={option}"]
    subprocess.run(command, check=True)
    seconds = round(time.perf_counter() - started, 1)
    (run / "bench.json").write_text(json.dumps({"train_seconds": seconds, "command": command[2:]}) + "\n")
    return {"run": run, "train_seconds": seconds}


def measured(run, train_seconds: float) -> dict:
    """An option's validation and test numbers (from its run) and its Grad-CAM against the human lung masks."""
    from pneumoscan.data.records import load_samples
    from pneumoscan.explain.anatomy import anatomy_review
    from pneumoscan.models.checkpoint import load_model

    loaded = load_model(run)
    headline = loaded.description.metrics["headline"]
    review = run / "anatomy_review"
    if not (review / "anatomy.json").exists():
        anatomy_review(loaded, load_samples(str(DATA), "test"), review, methods=("gradcam",), data_root=str(DATA),
                       masks_root=str(LUNG_MASKS / "kermany"))
    called = json.loads((review / "anatomy.json").read_text())["gradcam"]["called_PNEUMONIA"]
    return {"val_auc": headline["val_auc"], "test_auc": headline["test_auc"],
            "test_accuracy": headline["test_accuracy"], "test_sensitivity": headline["test_sensitivity"],
            "test_specificity": headline["test_specificity"], "threshold": loaded.threshold,
            "gradcam_heat_in_lungs": called["heat_in_lungs"], "gradcam_chance": called["chance"],
            "gradcam_peak_in_lungs": called.get("peak_in_lungs"), "train_seconds": train_seconds,
            "run": str(run.relative_to(WORK.parents[2]))}


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--options", nargs="*", default=list(OPTIONS), choices=OPTIONS)
    parser.add_argument("--reuse", action="store_true", help="measure finished runs again instead of training")
    args = parser.parse_args()
    started = time.perf_counter()
    previous = json.loads((RESULTS / "anatomy.json").read_text())
    block = dict(previous.get("lungs_option", {}))
    recipes = dict(block.get("recipes", {}))
    for option in args.options:
        trained = train(option, args.recipe, args.reuse)
        recipes.setdefault(args.recipe, {})[option] = measured(trained["run"], trained["train_seconds"])
    chosen = recipes[args.recipe]
    block.update({
        "recipes": recipes,
        "how": "DenseNet121 trained on the Kermany train split (validation carved out by patient) with the lung "
               "segmenter before the trunk (crop: the lung field's box with a 5% margin; mask: the lung field "
               "widened by 4% of the side, the rest the mean grey); threshold on validation; test once",
        "default_chosen_on": f"validation AUC of the {args.recipe} recipe",
        "default": max(chosen, key=lambda option: chosen[option]["val_auc"]),
        "commit": launch_commit(), "part_wall_seconds": round(time.perf_counter() - started, 1),
    })
    for option, numbers in chosen.items():  # the keys: lungs_option.<option>.val_auc and .test_auc
        block[option] = {"val_auc": numbers["val_auc"], "test_auc": numbers["test_auc"], "recipe": args.recipe}
    write_result("anatomy", {**previous, "lungs_option": block})


if __name__ == "__main__":
    main()

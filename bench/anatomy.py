"""Anatomy benchmark, part one: the lung segmenter.

    python -m bench.anatomy [--run NAME] [--set epochs=16 balance=0.5] [--reuse]

Trains ``pneumoscan segment train`` on ``shared/data/lung_masks`` (Kermany train and ieee8023 train; validation
carved out by patient) as a user runs it, a subprocess timed from start to finish, and records the Dice
(with its bootstrap interval) and Hausdorff 95 on the Kermany test masks and on the held-out adult films
(ieee8023 ``split=test``), scored once by the run itself. Writes ``bench/results/anatomy.json`` under
``segmentation``; the heat-in-lungs, lateral-film and ``lungs=`` parts of the issue come later.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.common import RESULTS, ROOT, SHARED, launch_commit, write_result

LUNG_MASKS = SHARED / "data" / "lung_masks"
WORK = ROOT / "bench" / "work" / "anatomy"


def segmentation(run_name: str, settings: list[str], reuse: bool) -> dict:
    run = WORK / run_name
    started = time.perf_counter()
    if not (reuse and (run / "metrics.json").exists()):
        subprocess.run([sys.executable, "-m", "pneumoscan.cli", "segment", "train", "--data", str(LUNG_MASKS),
                        "--out", str(run), "--set", *settings], check=True)
    metrics = json.loads((run / "metrics.json").read_text())
    return {"kermany_test": metrics["test"]["kermany_test"], "adult_heldout": metrics["test"]["ieee8023_test"],
            "train_seconds": metrics["train_seconds"], "wall_seconds": round(time.perf_counter() - started, 1),
            "trained_on": metrics["trained_on"], "chosen_epoch": metrics["chosen_epoch"],
            "val_dice": metrics["val_dice"], "val_dice_by_source": metrics.get("val_dice_by_source"),
            "settings": json.loads((run / "config.json").read_text()),
            "masks": "compared at 224 x 224 (films squashed, as chest_xray_224 squashed Kermany's); pixels V7 marked "
                     "'ignore' (devices, markup) count as neither lung nor background"}


def main() -> None:
    launch_commit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="lungs", help="the run folder's name under bench/work/anatomy")
    parser.add_argument("--set", nargs="*", default=[], help="segment train settings, e.g. epochs=16 balance=0.5")
    parser.add_argument("--reuse", action="store_true", help="score a finished run again instead of training")
    args = parser.parse_args()
    previous = json.loads((RESULTS / "anatomy.json").read_text()) if (RESULTS / "anatomy.json").exists() else {}
    write_result("anatomy", {**previous, "data": "shared/data/lung_masks",
                             "segmentation": segmentation(args.run, args.set, args.reuse)})


if __name__ == "__main__":
    main()

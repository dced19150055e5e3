"""Training speed: the cached two-stage loop against the naive loop, on this CPU.

The naive loop decodes and augments every image, runs the frozen trunk and then trains, every
epoch. The cached loop runs the trunk once per augmented view and trains on stored activations.
Both are timed per image here on the same images; totals are extrapolated to the epochs of the
accuracy run (``bench/results/accuracy_<model>.json``), whose cached total was measured for real.

    python -m bench.train_speed --model densenet121
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bench.common import DATA, RESULTS, WEIGHTS, launch_commit, write_result
from pneumoscan.data import Augmentation, XRayDataset, scan_kaggle_split  # noqa: E402
from pneumoscan.device import autocast_for  # noqa: E402
from pneumoscan.models.networks import TailAndHead, build_model  # noqa: E402


def time_steps(step, batches, warmup: int = 2) -> float:
    """Seconds per image of ``step`` over ``batches`` (after ``warmup`` batches)."""
    seen, elapsed = 0, 0.0
    for i, (x, y) in enumerate(batches):
        started = time.perf_counter()
        step(x, y)
        if i >= warmup:
            elapsed += time.perf_counter() - started
            seen += len(x)
    return elapsed / seen


def measure(model, samples, precision: str) -> dict:
    """Per-image times of the naive and the cached loop at ``precision``."""
    device = torch.device("cpu")
    trunk = model.trunk.eval()
    if precision == "bf16":
        trunk = trunk.to(memory_format=torch.channels_last)
    tail_head = TailAndHead(model).train()
    optimizer = torch.optim.AdamW([p for p in tail_head.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def trunk_out(x):
        if precision == "bf16":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast_for(device, precision):
            return trunk(x).float()

    def train_step(acts, y):
        with autocast_for(device, precision):
            out = tail_head(acts)
        loss = loss_fn(out.float(), y.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    loader = DataLoader(XRayDataset(samples, model.preprocessing, augmentation=Augmentation()), batch_size=32,
                        num_workers=2)
    # naive: every epoch decodes, augments and runs the frozen trunk before training the tail
    naive = time_steps(lambda x, y: train_step(trunk_out(x), y), ((x, y) for x, y, _ in loader))
    head_epoch = time_steps(lambda x, y: trunk_out(x), ((x, y) for x, y, _ in loader))
    started = time.perf_counter()
    cached_batches = [(trunk_out(x), y) for x, y, _ in loader]
    caching = (time.perf_counter() - started) / len(samples)
    cached = time_steps(train_step, cached_batches)
    return {"naive_tail_step_ms_per_image": 1000 * naive, "naive_head_epoch_ms_per_image": 1000 * head_epoch,
            "caching_ms_per_view": 1000 * caching, "cached_tail_step_ms_per_image": 1000 * cached,
            "tail_step_speedup": naive / cached}


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="densenet121", choices=["densenet121", "resnet50"])
    parser.add_argument("--images", type=int, default=320)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(args.model, weights=WEIGHTS[args.model], allow_partial_weights=True).freeze_trunk(True)
    samples = scan_kaggle_split(DATA, "train")[:: max(1, 5216 // args.images)][: args.images]
    results = {precision: measure(model, samples, precision) for precision in ("fp32", "bf16")}
    for precision, numbers in results.items():
        print(precision, json.dumps(numbers, indent=1))

    accuracy_file = RESULTS / f"accuracy_{args.model}.json"
    if accuracy_file.exists():
        run = json.loads(accuracy_file.read_text())
        history = json.loads((Path(run["settings"]["out"]) / "history.json").read_text())
        epochs = {stage: sum(r["stage"] == stage for r in history) for stage in ("head", "tail")}
        n_train = 4471  # images in the train part of the patient split
        per = results[run["settings"]["precision"]]
        naive_total = n_train * (epochs["head"] * per["naive_head_epoch_ms_per_image"]
                                 + epochs["tail"] * per["naive_tail_step_ms_per_image"]) / 1000
        cached_total = sum(v for k, v in run["timings_seconds"].items() if k in ("head", "tail"))
        results["whole_training"] = {"epochs": epochs, "naive_seconds_estimated": round(naive_total, 1),
                                     "cached_seconds_measured": cached_total,
                                     "speedup": round(naive_total / cached_total, 2),
                                     "note": "cached time includes computing every cached view; naive time is the "
                                             "per-image cost measured here times the same epochs"}
    write_result(f"train_speed_{args.model}", {"model": args.model, "images_timed": len(samples), **results})


if __name__ == "__main__":
    main()

"""``pneumoscan train``: from a dataset to a trained, thresholded and evaluated model in a run folder.

Order of work (each step in its module): the run folder, the patient split and the model
(``train.setup``) -> the stages, head then tail or full, on cached frozen-trunk activations
(``train.stages``) -> the input checks, the threshold on validation, the saved model and the test
evaluation (``train.finish``). A killed run resumes from its last finished epoch. Under ``torchrun``
the stages run on every rank (``distributed``) and rank 0 writes and finishes the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pneumoscan.data.labels import ClassMap
from pneumoscan.data.records import class_counts
from pneumoscan.device import describe_device, effective_precision, pick_device
from pneumoscan.distributed import Ranks, main_first
from pneumoscan.distributed import start as start_ranks
from pneumoscan.distributed import stop as stop_ranks
from pneumoscan.evaluate.plots import plot_history
from pneumoscan.evaluate.report import write_json
from pneumoscan.models.networks import ScreeningNet
from pneumoscan.run_folder import RunFolder
from pneumoscan.storage import atomic_save, cache_bytes, format_bytes
from pneumoscan.train.config import TrainConfig
from pneumoscan.train.finish import fit_run_input_checks, test_samples, threshold_and_evaluate
from pneumoscan.train.progress import RunProgress, RunSize, run_steps
from pneumoscan.train.setup import build, load_split, log_to_file, prepare_run_folder, run_classes
from pneumoscan.train.stages import run_training_stage

log = logging.getLogger(__name__)


def train(config: TrainConfig, *, resume: bool = False, finish: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> Path:
    """Train, threshold and evaluate as ``config`` says; returns the run folder.

    ``finish=False`` stops after the training stages (no threshold, evaluation or saved model), as
    a tuning trial does; ``on_epoch`` receives every epoch's history row.
    """
    config = config.resolved()
    folder = RunFolder(config.out)
    ranks = Ranks.from_environment()  # several under torchrun
    device = rank_device(pick_device(config.device), ranks)
    start_ranks(ranks, device)
    with main_first(ranks):
        if ranks.main:
            prepare_run_folder(folder, config, resume)
    handler = log_to_file(folder.log) if ranks.main else None
    try:
        _train(config, folder, finish, on_epoch, ranks, device)
        return folder.root
    finally:
        if handler is not None:
            logging.getLogger("pneumoscan").removeHandler(handler)
            handler.close()


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """Each rank's GPU (its local rank) when training on CUDA with several processes."""
    if device.type == "cuda" and ranks.distributed:
        torch.cuda.set_device(ranks.local_rank)
        return torch.device("cuda", ranks.local_rank)
    return device


def _train(config: TrainConfig, folder: RunFolder, finish: bool, on_epoch, ranks: Ranks, device) -> None:
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    log.info("pneumoscan train: model %s, stages %s, device %s, %d threads%s", config.model,
             "+".join(config.stages), device, torch.get_num_threads(),
             f", rank {ranks.rank} of {ranks.world}" if ranks.distributed else "")
    log.info("precision %s", effective_precision(config.precision, device))
    with main_first(ranks):  # rank 0 writes the classes and the split; the others read them
        classes = run_classes(folder, config)
        pool, splits = load_split(config, folder, classes)
    weights = class_weights(config, splits, classes)
    model = build(config, classes).to(device)
    test = test_samples(config, classes) if finish and ranks.main else []
    size = RunSize(pool=len(pool), train=len(splits["train"]), val=len(splits["val"]), test=len(test))
    steps = run_steps(config.stages, config, size)
    announce = RunProgress(steps if finish else steps[:len(config.stages)])
    if ranks.main and any(stage != "full" for stage in config.stages):
        log_cache(config, model, size)
    progress = _load_progress(folder, model)
    timings = progress["timings"]
    if progress["history"] or folder.epoch_state.exists():
        timings["resumed"] = True  # the seconds below then cover only what ran after the resume
    for stage in config.stages:
        if stage in progress["completed"]:
            announce.begin(stage, done_before=True)
            continue
        announce.begin(stage)
        run_training_stage(stage, model, config, splits, pool, weights, device, folder, progress["history"],
                           on_epoch, ranks=ranks)
        progress["completed"].append(stage)
        timings[stage] = round(announce.end(), 1)
        if ranks.main:
            atomic_save({**progress, "model": model.state_dict()}, folder.progress)
    stop_ranks(ranks)  # the training is done; rank 0 alone finishes the run
    if not ranks.main:
        return
    write_json(folder.history, progress["history"])
    if not finish:
        return
    plot_history(progress["history"], folder.curves)
    announce.begin("input checks")
    checks = fit_run_input_checks(model, config, config.input_checks, splits, device, folder)
    timings["input_checks"] = round(announce.end(), 1)
    announce.begin("threshold and test")
    summary = threshold_and_evaluate(model, config, splits, device, folder, checks, classes, test)
    timings["threshold_and_test"] = round(announce.end(), 1)
    summary["timings"] = {**timings, "total_seconds": round(time.perf_counter() - started, 1)}
    summary["device"] = describe_device(device)
    summary["precision"] = effective_precision(config.precision, device)
    write_json(folder.metrics, summary)
    log.info("run finished in %.0f s: %s", time.perf_counter() - started, folder.root)


def log_cache(config: TrainConfig, model: ScreeningNet, size: RunSize) -> None:
    """Where the frozen trunk's outputs are cached, how much is there, and about how much this run adds."""
    per_view = trunk_output_size(model, config.image_size) * 2  # float16
    log.info("activation cache: %s (%s there now; this run's trunk outputs take about %s, reused by every later "
             "run on the same images; set PNEUMOSCAN_CACHE or cache_dir to move it, 'pneumoscan cache --clear' "
             "frees it)", config.cache_dir, format_bytes(cache_bytes(config.cache_dir)),
             format_bytes(per_view * size.pool * config.cached_views_per_image()))


def trunk_output_size(model: ScreeningNet, image_size: int) -> int:
    """How many values the trunk computes per image, from a pass in eval mode that leaves the model as it was (a
    pass in training mode would move its BatchNorm statistics)."""
    was_training = model.trunk.training
    model.trunk.eval()
    try:
        with torch.no_grad():
            return model.trunk(torch.zeros(1, model.preprocessing.channels, image_size, image_size)).numel()
    finally:
        model.trunk.train(was_training)


def class_weights(config: TrainConfig, splits, classes: ClassMap) -> tuple[float, ...]:
    """Two classes: (BCE's pos_weight,), the asked one or negatives / positives of the training split times
    ``pos_weight_scale``; more: cross-entropy's weight per class, n / (K n_class) of the training split."""
    counts = class_counts(splits["train"], classes.names)
    described = ", ".join(f"{name} {n}" for name, n in counts.items())
    n = list(counts.values())
    if classes.binary:
        pos_weight = config.pos_weight or config.pos_weight_scale * n[0] / max(1, n[1])
        log.info("class-weighted BCE: pos_weight %.4f (train %s)", pos_weight, described)
        return (pos_weight,)
    weights = tuple(sum(n) / (len(n) * max(1, c)) for c in n)
    log.info("class-weighted cross-entropy: %s (train %s)", ", ".join(f"{w:.3f}" for w in weights), described)
    return weights


def _load_progress(folder: RunFolder, model: ScreeningNet) -> dict:
    """The stages done, history and timings of a killed run (its weights go into ``model``); empty for a new run."""
    if not folder.progress.exists():
        return {"completed": [], "history": [], "timings": {}}
    saved = torch.load(folder.progress, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    log.info("resuming: stages done %s", saved["completed"])
    return {"completed": list(saved["completed"]), "history": saved["history"],
            "timings": saved.get("timings", {})}

"""``pneumoscan tune``: hyperparameter search with Optuna on a validation score (never test).

The default objective is the score over validation images pooled with their acquisition-shifted
copies (``data.shifts``): ROC-AUC for two classes, accuracy for more (the score training stops on).
Clean validation AUC sits near 1.0 on the default chest X-ray task, where a search would chase noise, while the
shifted copies separate models that transfer from those that do not.

Trials are cheap because they train on the cached frozen-trunk activations of the core pipeline
(each augmentation level is cached once, before the first trial). TPE sampling, median pruning
per epoch. The study lives in a database (SQLite by default), so a killed study resumes with its
trial count, and several processes or machines can work on one study through any Optuna storage URL.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from pneumoscan.data.preprocess import Augmentation
from pneumoscan.data.records import task_classes
from pneumoscan.run_folder import RunFolder
from pneumoscan.settings import load_settings, to_dict
from pneumoscan.studies.tune_report import write_plots, write_trials_table
from pneumoscan.train import TrainConfig, train
from pneumoscan.train.finish import validation_logits

AUGMENTATION_LEVELS = {
    "recipe": Augmentation.recipe(),   # the published recipe: rotation, flip, zoom, shift, brightness/contrast
    "acquisition": Augmentation(),     # the default: recipe + acquisition-shift augmentations
}


@dataclass(frozen=True)
class TuneConfig:
    """Settings of ``pneumoscan tune``."""

    data: str = ""                       # dataset root (Kaggle layout) or label CSV
    out: str = "runs/tune"               # study folder: trials, best config, plots
    base_config: str = ""                # a train --config JSON every trial starts from
    model: str = "densenet121"
    weights: str = "auto"
    allow_partial_weights: bool = False
    trials: int = 30                     # total trials of the study (over all workers)
    timeout_minutes: float = 0.0         # stop starting trials after this long (0 = no limit)
    storage: str = ""                    # Optuna storage URL; "" = sqlite:///OUT/study.db
    study: str = "pneumoscan"            # study name within the storage
    workers: int = 1                     # local worker processes sharing the study
    seed: int = 0
    head_epochs: int = 12                # per trial
    tail_epochs: int = 4                 # per trial (pruned early when below the median)
    augmentation_levels: tuple[str, ...] = ("recipe", "acquisition")
    objective: str = "auto"              # "val_auc" / "val_accuracy" (clean validation images) or "val_shifts_auc"
                                         # / "val_shifts_accuracy" (clean validation pooled with its acquisition-
                                         # shifted copies); "auto" = the shifted one, AUC for two classes and
                                         # accuracy for more
    cache_dir: str = ""

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r}: choose one of {OBJECTIVES}")

    def objective_for(self, classes: int) -> str:
        """The objective this study maximizes on a task of ``classes`` classes."""
        if self.objective != "auto":
            return self.objective
        return "val_shifts_auc" if classes == 2 else "val_shifts_accuracy"


OBJECTIVES = ("auto", "val_auc", "val_shifts_auc", "val_accuracy", "val_shifts_accuracy")


def suggest(trial: optuna.Trial, config: TuneConfig, classes: int = 2) -> dict:
    """The search space: learning rates of both stages, head size and dropouts, weight decay, how
    much of the last block is trained, augmentation strength, and the positive-class weight (two
    classes) or the label smoothing (more)."""
    params = {
        "head_lr": trial.suggest_float("head_lr", 1e-4, 1e-2, log=True),
        "tail_lr": trial.suggest_float("tail_lr", 1e-5, 1e-3, log=True),
        "head_hidden": trial.suggest_categorical("head_hidden", [64, 128, 256, 512]),
        "dropout_in": trial.suggest_float("dropout_in", 0.1, 0.6),
        "dropout_hidden": trial.suggest_float("dropout_hidden", 0.0, 0.5),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
        "tail_fraction": trial.suggest_categorical("tail_fraction", [0.25, 0.5, 1.0]),
        "augmentation": trial.suggest_categorical("augmentation", list(config.augmentation_levels)),
    }
    if classes == 2:
        params["pos_weight_scale"] = trial.suggest_float("pos_weight_scale", 0.5, 2.0, log=True)
    else:
        params["label_smoothing"] = trial.suggest_float("label_smoothing", 0.0, 0.2)
    return params


def trial_config(base: TrainConfig, params: dict, out: Path) -> TrainConfig:
    """The training settings of one trial: the base settings with the trial's choices."""
    return replace(base, out=str(out), head=replace(base.head, lr=params["head_lr"], lr_min=params["head_lr"] / 10),
                   tail=replace(base.tail, lr=params["tail_lr"], lr_min=params["tail_lr"] / 10,
                                fraction=params["tail_fraction"]),
                   weight_decay=params["weight_decay"],
                   augmentation=AUGMENTATION_LEVELS[params["augmentation"]],
                   pos_weight=0.0, pos_weight_scale=params.get("pos_weight_scale", base.pos_weight_scale),
                   label_smoothing=params.get("label_smoothing", base.label_smoothing), test_split="",
                   shift_report=False,
                   head_hidden=params["head_hidden"], dropout_in=params["dropout_in"],
                   dropout_hidden=params["dropout_hidden"])


def base_settings(config: TuneConfig) -> TrainConfig:
    overrides = {"data": config.data, "model": config.model, "weights": config.weights, "seed": config.seed,
                 "allow_partial_weights": config.allow_partial_weights, "head": {"epochs": config.head_epochs},
                 "tail": {"epochs": config.tail_epochs}}
    if config.cache_dir:
        overrides["cache_dir"] = config.cache_dir
    return load_settings(TrainConfig, file=config.base_config or None, overrides=overrides)


def objective(trial: optuna.Trial, config: TuneConfig) -> float:
    """The validation score of the trial's trained model (the clean validation score is reported per
    epoch for pruning)."""
    base = base_settings(config)
    classes = len(task_classes(base.data, base.classes, base.train_split).names)
    params = suggest(trial, config, classes)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # which process ran it
    settings = trial_config(base, params, Path(config.out) / "trials" / f"trial_{trial.number:04d}")
    goal = config.objective_for(classes)
    score = goal.rsplit("_", 1)[1]  # "auc" or "accuracy"

    def report(row: dict) -> None:
        trial.report(row[f"val_{score}"], step=row["global_epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation {score} {row[f'val_{score}']:.4f} below the median at epoch "
                                     f"{row['global_epoch']}")

    run_dir = train(settings, finish=False, on_epoch=report)
    if not goal.startswith("val_shifts"):
        history = json.loads(RunFolder(run_dir).history.read_text())
        return max(row[f"val_{score}"] for row in history)
    return pooled_validation_score(validation_logits(run_dir), score)


def study_objective(config: TuneConfig, base: TrainConfig) -> str:
    """The objective of this study on its data's classes."""
    return config.objective_for(len(task_classes(base.data, base.classes, base.train_split).names))


def pooled_validation_score(logits: dict[str, np.ndarray], score: str) -> float:
    """ROC-AUC or accuracy over clean validation images pooled with their shifted copies (``validation_logits``'s
    output: one logit per image for two classes, a row of class logits for more)."""
    copies = logits["shifted"].shape[1]
    labels = np.concatenate([logits["labels"], np.repeat(logits["shift_labels"], copies)])
    clean, shifted = logits["clean"], logits["shifted"]
    scores = np.concatenate([clean, shifted.reshape(-1, *clean.shape[1:])])
    if score == "auc":
        if scores.ndim == 1:
            return float(roc_auc_score(labels, scores))
        return float(roc_auc_score(labels, softmax(scores, axis=1), multi_class="ovr", average="macro"))
    called = (scores >= 0).astype(int) if scores.ndim == 1 else scores.argmax(1)
    return float(np.mean(called == labels))


def storage_url(config: TuneConfig) -> str:
    return config.storage or f"sqlite:///{Path(config.out).resolve() / 'study.db'}"


def open_study(config: TuneConfig, worker: int = 0) -> optuna.Study:
    """Create or load the study (heartbeats mark trials of a killed worker as failed).

    The sampler's seed mixes ``config.seed`` with the worker index and the number of trials already
    stored, so parallel workers and a resumed study do not replay the random draws of another."""
    storage = optuna.storages.RDBStorage(storage_url(config), heartbeat_interval=30, grace_period=90,
                                         engine_kwargs={"connect_args": {"timeout": 120}}
                                         if storage_url(config).startswith("sqlite") else {})
    study = optuna.create_study(study_name=config.study, storage=storage, direction="maximize", load_if_exists=True,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0))
    seed = sampler_seed(config.seed, worker, len(study.get_trials(deepcopy=False)))
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)
    return study


def sampler_seed(seed: int, worker: int, stored_trials: int) -> int:
    return int(np.random.SeedSequence([seed, worker, stored_trials]).generate_state(1)[0])


def _finished(study: optuna.Study) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def work(config: TuneConfig, deadline: float | None = None, worker: int = 0) -> None:
    """One worker: run trials until the study has ``config.trials`` finished ones (or time is up)."""
    import torch

    if config.workers > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // config.workers))
    study = open_study(config, worker)
    remaining = config.trials - _finished(study)
    if remaining <= 0:
        return
    # each worker takes its share of what is left, so the study ends at its trial count exactly (a count
    # checked after each trial lets every worker start one more)
    share = remaining // config.workers + (worker < remaining % config.workers)
    callback = optuna.study.MaxTrialsCallback(config.trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                     optuna.trial.TrialState.PRUNED))
    timeout = None if deadline is None else max(1.0, deadline - time.time())
    study.optimize(lambda trial: objective(trial, config), n_trials=share, timeout=timeout,
                   callbacks=[callback], catch=(RuntimeError, ValueError))


def prepare_caches(config: TuneConfig) -> float:
    """Cache the trunk's activations for every augmentation level before the first trial; returns seconds."""
    started = time.perf_counter()
    base = base_settings(config)
    for level in config.augmentation_levels:
        folder = Path(config.out) / "cache_warmup" / level
        shutil.rmtree(folder, ignore_errors=True)
        settings = replace(base, out=str(folder), head=replace(base.head, epochs=1), stages=("head",),
                           augmentation=AUGMENTATION_LEVELS[level], test_split="", shift_report=False)
        train(settings, finish=False)
    return time.perf_counter() - started


def tune(config: TuneConfig) -> dict:
    """Run (or resume) the study, then write the best configuration, the trials table and plots."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    setup_seconds = prepare_caches(config)
    started = time.time()
    deadline = started + 60 * config.timeout_minutes if config.timeout_minutes else None
    if config.workers > 1:
        open_study(config)  # the storage's tables are made once, before workers race to make them
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=work, args=(config, deadline, worker))
                     for worker in range(config.workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    else:
        work(config, deadline)
    return write_outputs(config, open_study(config), time.time() - started, setup_seconds)


def write_outputs(config: TuneConfig, study: optuna.Study, seconds: float, setup_seconds: float) -> dict:
    out = Path(config.out)
    best = study.best_trial
    best_settings = trial_config(base_settings(config), best.params, out / "best")
    best_config = {k: v for k, v in to_dict(best_settings).items() if k not in ("out", "test_split", "shift_report")}
    (out / "best_config.json").write_text(json.dumps(best_config, indent=2) + "\n")
    write_trials_table(study, out / "trials.csv")
    write_plots(study, out)
    finished = _finished(study)
    goal = study_objective(config, base_settings(config))
    summary = {"study": config.study, "storage": storage_url(config), "n_trials": finished,
               "n_complete": len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))),
               "n_pruned": len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))),
               "best_trial": best.number,
               "objective": goal, "best_value": best.value,
               **({"val_auc": best.value} if goal.endswith("_auc") else {}), "best_params": best.params,
               "wall_seconds": round(seconds, 1), "cache_setup_seconds": round(setup_seconds, 1),
               "trials_per_hour": round(3600 * finished / max(seconds, 1e-9), 1) if math.isfinite(seconds) else None,
               "best_config": str(out / "best_config.json")}
    (out / "tune_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

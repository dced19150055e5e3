"""``pneumoscan train``: from a dataset to a trained, thresholded and evaluated model in a run folder.

Order of work: split train by patient -> drop unreadable files -> build the model -> cache the
frozen trunk's activations (augmented views for training, a clean view for validation) -> stages
(head, then tail; or full) -> fit the input checks (``input_checks``) -> threshold on validation (and
validation under acquisition shifts) -> save the model -> evaluate validation, then screen the test
split once with the saved model (``screen.Screener``, as every user of the model does).
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pneumoscan import settings as settings_io
from pneumoscan.cache import batched_logits, cached_activations, cached_outputs
from pneumoscan.checkpoint import MODEL_FILE, atomic_save, replace_checks, save_model
from pneumoscan.data.dataset import XRayDataset
from pneumoscan.data.preprocess import Preprocessing
from pneumoscan.data.records import Sample, class_counts, find_unreadable, load_samples
from pneumoscan.data.shifts import SHIFTS
from pneumoscan.data.split import describe_split, evenly_spaced, patient_split, read_split, write_split
from pneumoscan.device import cpu_times, describe_device, effective_precision, pick_device, steal_share
from pneumoscan.evaluate.metrics import choose_threshold, threshold_interval
from pneumoscan.evaluate.plots import plot_history
from pneumoscan.evaluate.report import evaluate_split, write_json, write_predictions
from pneumoscan.evaluate.robustness import (
    pool_groups_with_shifts,
    pool_with_shifts,
    robustness_report,
    shifted_logits,
)
from pneumoscan.input_checks import InputChecks, InputCheckSettings, fit_input_checks, model_features, shift_layer_of
from pneumoscan.models import PneumoniaNet, TailAndHead, build_model
from pneumoscan.predict import predict_logits, sigmoid
from pneumoscan.train.config import TrainConfig
from pneumoscan.train.loop import ArraySource, LoaderSource, StageSettings, run_stage

log = logging.getLogger(__name__)
LOG_FILE = "train.log"
# what a run saved before a setting existed did, so that it can still be resumed (with that value)
SETTINGS_OF_OLDER_RUNS = {"cache_engine": "torch", "recipe": "", "pos_weight_scale": 1.0}
INVOCATION_START = "pneumoscan train:"  # the first log line of every invocation (a resume starts another)

STATE_FILE = "train_state.pt"
PROGRESS_FILE = "progress.pt"


class HeadOnPooled(nn.Module):
    """The head applied to already pooled features ``[B, C]`` (pooling a 1 x 1 map changes nothing)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled[:, :, None, None]).squeeze(1)


def train(config: TrainConfig, *, resume: bool = False, finish: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> Path:
    """Train, threshold and evaluate as ``config`` says; returns the run folder.

    ``finish=False`` stops after the training stages (no threshold, evaluation or saved model), as
    a tuning trial does; ``on_epoch`` receives every epoch's history row.
    """
    config = config.resolved()
    run_dir = Path(config.out)
    _prepare_run_dir(run_dir, config, resume)
    handler = _log_to_file(run_dir / LOG_FILE)
    try:
        return _train(config, run_dir, finish, on_epoch)
    finally:
        logging.getLogger("pneumoscan").removeHandler(handler)
        handler.close()


def _train(config: TrainConfig, run_dir: Path, finish: bool, on_epoch) -> Path:
    started, cpu_at_start = time.perf_counter(), cpu_times()
    device = pick_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    # the invocation's first log line: seconds_across_invocations starts a span here, so nothing (such as
    # effective_precision's fallback warning) may be logged before it
    log.info(INVOCATION_START + " model %s, stages %s, device %s, %d threads", config.model,
             "+".join(config.stages), device, torch.get_num_threads())
    log.info("precision %s", effective_precision(config.precision, device))
    preprocessing = Preprocessing(image_size=config.image_size, intensity=config.intensity)
    pool, splits = _load_split(config, run_dir)
    counts = class_counts(splits["train"])
    pos_weight = config.pos_weight or config.pos_weight_scale * counts["NORMAL"] / max(1, counts["PNEUMONIA"])
    log.info("class-weighted BCE: pos_weight %.4f (train NORMAL %d / PNEUMONIA %d)", pos_weight,
             counts["NORMAL"], counts["PNEUMONIA"])

    model = _build(config, preprocessing).to(device)
    progress = _load_progress(run_dir, model)
    timings = progress.setdefault("timings", {})
    if progress["history"] or (run_dir / STATE_FILE).exists():
        timings["resumed"] = True  # the seconds below then cover only what ran after the resume
    for stage in config.stages:
        if stage in progress["completed"]:
            log.info("stage %s already done", stage)
            continue
        stage_started = time.perf_counter()
        _run_one_stage(stage, model, config, pool, splits, pos_weight, device, run_dir, progress["history"],
                       on_epoch)
        progress["completed"].append(stage)
        timings[stage] = round(time.perf_counter() - stage_started, 1)
        _log_steal(f"stage {stage}", cpu_at_start)
        atomic_save({"completed": progress["completed"], "model": model.state_dict(),
                     "history": progress["history"], "timings": timings}, run_dir / PROGRESS_FILE)
    write_json(run_dir / "history.json", progress["history"])
    if not finish:
        return run_dir
    plot_history(progress["history"], run_dir / "training_curves.png")

    checks = _fit_input_checks(model, config, config.input_checks, pool, splits, device, run_dir)
    summary = _threshold_and_evaluate(model, config, splits, device, run_dir, checks)
    summary["timings"] = {**timings, "total_seconds": round(time.perf_counter() - started, 1),
                          "cpu_steal_share": steal_share(cpu_at_start)}
    summary["device"] = describe_device(device)
    summary["precision"] = effective_precision(config.precision, device)
    if timings.get("resumed"):
        summary["timings"]["seconds_all_invocations"] = seconds_across_invocations(run_dir / LOG_FILE)
    write_json(run_dir / "metrics.json", summary)
    log.info("run finished in %.0f s: %s", time.perf_counter() - started, run_dir)
    _log_steal("run", cpu_at_start)
    return run_dir


def _log_steal(what: str, cpu_at_start: tuple[int, int] | None) -> None:
    """Log the CPU steal time of this invocation so far: a contended VM slows every timing after it."""
    share = steal_share(cpu_at_start)
    if share is not None:
        log.info("%s done: CPU steal %.0f%% of this invocation's CPU time so far%s", what, 100 * share,
                 " (a contended virtual machine: its timings run slow)" if share >= 0.05 else "")


def run_config(run_dir: str | Path) -> TrainConfig:
    """The settings a run was made with (a setting newer than the run takes the value the run used)."""
    saved = json.loads((Path(run_dir) / "config.json").read_text())
    return settings_io.from_dict(TrainConfig, {**SETTINGS_OF_OLDER_RUNS, **saved})


def trained_model(run_dir: str | Path) -> PneumoniaNet:
    """The model of a run after its training stages (also a run stopped with ``finish=False``)."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    model = _build(config, Preprocessing(image_size=config.image_size, intensity=config.intensity))
    model.load_state_dict(torch.load(run_dir / PROGRESS_FILE, map_location="cpu", weights_only=True)["model"])
    return model.eval()


def validation_logits(run_dir: str | Path, *, shift_images: int = 400) -> dict[str, np.ndarray]:
    """Clean and shifted validation logits of a run's trained model, through the cached trunk.

    Returns ``labels``/``clean`` for every validation image and ``shift_labels``/``shifted``
    (images x shifts) for ``shift_images`` evenly spaced ones.
    """
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    device = pick_device(config.device)
    model = trained_model(run_dir).to(device)
    val = read_split(run_dir / "split.csv")["val"]
    common = dict(cache_dir=config.cache_dir, workers=config.workers, precision=config.precision, device=device,
                  engine=config.cache_engine)
    clean_acts = cached_activations(model.trunk, val, model.preprocessing, desc="caching validation", **common)
    clean = batched_logits(TailAndHead(model), clean_acts, batch_size=128, precision=config.precision, device=device)
    chosen = evenly_spaced(len(val), shift_images)
    shifted = shifted_logits(model, [val[i] for i in chosen], **common)
    labels = _labels(val).astype(int)
    return {"labels": labels, "clean": clean, "shift_labels": labels[chosen], "shifted": shifted}


def _prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> None:
    config_path = run_dir / "config.json"
    if resume:
        if not config_path.exists():
            raise FileNotFoundError(f"{run_dir}: nothing to resume (no config.json); start without --resume")
        saved = settings_io.to_dict(run_config(run_dir))
        if saved != settings_io.to_dict(config):
            changed = sorted(k for k, v in settings_io.to_dict(config).items() if saved.get(k) != v)
            raise ValueError(f"{run_dir}: --resume needs the same settings; these differ: {changed}")
        return
    if (run_dir / STATE_FILE).exists() or (run_dir / MODEL_FILE).exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(settings_io.to_dict(config), indent=2) + "\n")


def seconds_across_invocations(log_path: Path) -> float:
    """Time a killed and resumed run spent, from its train.log: each invocation's span (its start line to
    its last line), summed. What ran after an invocation's last line before a kill is not counted."""
    spans: list[list[datetime.datetime]] = []
    for line in log_path.read_text().splitlines():
        try:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            continue  # a continuation line (a traceback, a multi-line message)
        if INVOCATION_START in line or not spans:
            spans.append([stamp, stamp])
        spans[-1][1] = stamp
    return round(sum((end - start).total_seconds() for start, end in spans), 1)


def was_resumed(run_dir: Path) -> bool:
    """Whether a run was killed and resumed: flagged in its metrics, or more than one invocation in its log."""
    timings = json.loads((run_dir / "metrics.json").read_text())["timings"]
    log_path = run_dir / LOG_FILE
    invocations = log_path.read_text().count(INVOCATION_START) if log_path.exists() else 1
    return bool(timings.get("resumed")) or invocations > 1


def training_seconds(run_dir: Path) -> float:
    """A finished run's training time: all its invocations when it was resumed after a kill."""
    timings = json.loads((run_dir / "metrics.json").read_text())["timings"]
    if not was_resumed(run_dir):
        return timings["total_seconds"]
    return timings.get("seconds_all_invocations") or seconds_across_invocations(run_dir / LOG_FILE)


def _log_to_file(path: Path) -> logging.Handler:
    """Copy pneumoscan's INFO log to the run folder (whatever the console shows)."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("pneumoscan")
    package_logger.addHandler(handler)
    if package_logger.level == logging.NOTSET or package_logger.level > logging.INFO:
        package_logger.setLevel(logging.INFO)
    return handler


def _load_split(config: TrainConfig, run_dir: Path) -> tuple[list[Sample], dict[str, list[Sample]]]:
    """(the readable train pool, {"train": ..., "val": ...}), reusing a saved split when there is one."""
    split_file = run_dir / "split.csv"
    if split_file.exists() or config.split:
        splits = read_split(split_file if split_file.exists() else config.split)
        log.info("using split %s", split_file if split_file.exists() else config.split)
    else:
        source = load_samples(config.data, "train" if Path(config.data).is_dir() else None)
        broken = find_unreadable(source, desc="checking train images")
        if broken:
            write_json(run_dir / "unreadable_files.json", broken)
            log.warning("%d unreadable train images skipped (listed in unreadable_files.json)", len(broken))
        source = [s for s in source if s.path not in broken]
        train, val = patient_split(source, val_fraction=config.val_fraction, seed=config.seed)
        splits = {"train": train, "val": val}
    write_split(split_file, splits)
    for name, samples in splits.items():
        log.info("%s split: %s", name, describe_split(samples))
    pool = sorted(splits["train"] + splits["val"], key=lambda s: s.path)
    return pool, splits


def _build(config: TrainConfig, preprocessing: Preprocessing) -> PneumoniaNet:
    kwargs = {"weights": config.weights_argument(), "preprocessing": preprocessing, "head_hidden": config.head_hidden,
              "dropout_in": config.dropout_in, "dropout_hidden": config.dropout_hidden}
    if config.model != "baseline_cnn":
        kwargs["allow_partial_weights"] = config.allow_partial_weights
    torch.manual_seed(config.seed)  # the head's (and any random layer's) initial weights
    return build_model(config.model, **kwargs)


def _load_progress(run_dir: Path, model: PneumoniaNet) -> dict:
    path = run_dir / PROGRESS_FILE
    if not path.exists():
        return {"completed": [], "history": []}
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    log.info("resuming: stages done %s", saved["completed"])
    return {"completed": list(saved["completed"]), "history": saved["history"],
            "timings": saved.get("timings", {})}


def _rows(pool: list[Sample], samples: list[Sample], views: int) -> np.ndarray:
    """Row indices, in a pool-ordered cache with ``views`` rows per image, of every view of ``samples``."""
    position = {s.path: i for i, s in enumerate(pool)}
    index = np.array([position[s.path] for s in samples])
    return (index[:, None] * views + np.arange(views)[None, :]).ravel()


def _labels(samples: list[Sample]) -> np.ndarray:
    return np.array([s.label for s in samples], dtype=np.float32)


def _run_one_stage(stage, model, config, pool, splits, pos_weight, device, run_dir, history, on_epoch) -> None:
    settings = StageSettings(
        name=stage, epochs=getattr(config, f"{stage}_epochs"), lr=getattr(config, f"{stage}_lr"),
        lr_min=getattr(config, f"{stage}_lr_min"), weight_decay=config.weight_decay, patience=config.patience,
        pos_weight=pos_weight, seed=config.seed, precision=config.precision, device=device)
    global_epoch = history[-1]["global_epoch"] if history else 0
    train_y, val_y = _labels(splits["train"]), _labels(splits["val"])
    state_path = run_dir / STATE_FILE
    if stage == "full":
        model.freeze_trunk(False)
        dataset = XRayDataset(splits["train"], model.preprocessing, augmentation=config.augmentation,
                              seed=config.seed)
        source = LoaderSource(dataset, batch_size=config.batch_size, workers=config.workers, seed=config.seed,
                              stage=stage)
        val_paths = [s.path for s in splits["val"]]

        def validate(module):
            return val_y, predict_logits(module, val_paths, batch_size=64, workers=config.workers,
                                         precision=config.precision, device=device, desc="validating")[0]

        run_stage(model, list(model.parameters()), source, validate, settings, state_path=state_path,
                  history=history, global_epoch=global_epoch, on_epoch=on_epoch)
        return

    model.freeze_trunk(True)
    augmented, clean = _trunk_activations(model, config, pool, device)
    train_rows, val_rows = _rows(pool, splits["train"], config.train_views), _rows(pool, splits["val"], 1)
    if stage == "head":
        model.tail.requires_grad_(False)
        pooling = _pooling(model)
        common = dict(precision=config.precision, device=device)
        pooled_train = cached_outputs(pooling, augmented, folder=Path(augmented.filename).parent, **common)[train_rows]
        pooled_val = cached_outputs(pooling, clean, folder=Path(clean.filename).parent, **common)[val_rows]
        module = HeadOnPooled(model.head)
        source = ArraySource(pooled_train, train_y, views=config.train_views, batch_size=config.batch_size,
                             seed=config.seed, stage=stage)
        val_inputs = pooled_val
    else:
        model.tail.requires_grad_(True)
        model.train_tail_fraction(config.tail_fraction)
        module = TailAndHead(model)
        source = ArraySource(augmented[train_rows], train_y, views=config.train_views,
                             batch_size=config.batch_size, seed=config.seed, stage=stage)
        val_inputs = clean[val_rows]

    def validate(module):
        return val_y, batched_logits(module, val_inputs, batch_size=128, precision=config.precision, device=device)

    params = [p for p in module.parameters() if p.requires_grad]
    run_stage(module, params, source, validate, settings, state_path=state_path, history=history,
              global_epoch=global_epoch, on_epoch=on_epoch)
    model.tail.requires_grad_(True)
    model.frozen_tail_units = 0


def _trunk_activations(model, config, pool, device) -> tuple[np.ndarray, np.ndarray]:
    """The frozen trunk's cached outputs for the whole pool: augmented views, and the clean view."""
    common = dict(view_seed=0, cache_dir=config.cache_dir, workers=config.workers, precision=config.precision,
                  device=device, engine=config.cache_engine)
    augmented = cached_activations(model.trunk, pool, model.preprocessing, augmentation=config.augmentation,
                                   views=config.train_views, desc="caching augmented views", **common)
    clean = cached_activations(model.trunk, pool, model.preprocessing, augmentation=None, views=1,
                               desc="caching clean views", **common)
    return augmented, clean


def _pooling(model: PneumoniaNet) -> nn.Module:
    """tail -> global average pooling: the head's input, from trunk activations."""
    return nn.Sequential(model.tail, nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def _pooled(model: PneumoniaNet, activations: np.ndarray, config: TrainConfig, device) -> np.ndarray:
    """Pooled features of cached trunk activations with the model as it is now (not cached)."""
    return batched_logits(_pooling(model), activations, batch_size=128, precision=config.precision, device=device)


def refit_input_checks(run_dir: str | Path, settings: InputCheckSettings) -> dict:
    """Fit a finished run's input checks again with ``settings`` (other examples to accept or refuse) and
    save them into its ``model.pt``; the weights, threshold and metrics stay. Returns the fit report."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    device = pick_device(config.device)
    splits = read_split(run_dir / "split.csv")
    pool = sorted(splits["train"] + splits["val"], key=lambda s: s.path)
    model = trained_model(run_dir).to(device)
    checks = _fit_input_checks(model, config, settings, pool, splits, device, run_dir)
    replace_checks(run_dir / MODEL_FILE, checks)
    return json.loads((run_dir / CHECKS_REPORT).read_text())


CHECKS_REPORT = "input_checks.json"


def _fit_input_checks(model: PneumoniaNet, config: TrainConfig, settings: InputCheckSettings, pool, splits, device,
                      run_dir: Path) -> InputChecks:
    """Both input checks, on the final model's features of clean train and validation images (the last
    feature map's for the gate, the trunk's or the last's for the shift score); the fit report goes to
    ``input_checks.json``."""
    model.eval()
    if "full" in config.stages:
        (train_trunk, train_last), (val_trunk, val_last) = (_image_features(model, splits[name], config, device)
                                                            for name in ("train", "val"))
    else:
        clean = cached_activations(model.trunk, pool, model.preprocessing, cache_dir=config.cache_dir,
                                   workers=config.workers, precision=config.precision, device=device,
                                   engine=config.cache_engine, desc="caching clean views")
        rows = {name: _rows(pool, splits[name], 1) for name in ("train", "val")}
        train_last, val_last = (_pooled(model, clean[rows[name]], config, device) for name in ("train", "val"))
        train_trunk, val_trunk = (_spatial_mean(clean, rows[name]) for name in ("train", "val"))
    shift = (train_trunk, val_trunk) if shift_layer_of(model) == "trunk" else (train_last, val_last)
    checks, report = fit_input_checks(model, train_last, val_last, [s.path for s in splits["train"]], settings,
                                      shift_features=shift, seed=config.seed, precision=config.precision,
                                      device=device)
    write_json(run_dir / CHECKS_REPORT, {"settings": settings.to_dict(), "fitted_on": report,
                                         "shift_threshold": checks.shift.threshold})
    return checks


def _spatial_mean(activations: np.ndarray, rows: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Cached trunk activations ``[N, C, h, w]`` (float16 on disk) pooled to ``[len(rows), C]``, a chunk at a time."""
    return np.concatenate([np.asarray(activations[rows[i:i + chunk]], np.float32).mean(axis=(2, 3))
                           for i in range(0, len(rows), chunk)])


def _image_features(model: PneumoniaNet, samples: list[Sample], config: TrainConfig, device, chunk: int = 256):
    """(trunk pooled, last feature map pooled) of ``samples``' clean images, read a chunk at a time."""
    from pneumoscan.data.io import load_image

    parts = [model_features(model, [load_image(s.path) for s in samples[i:i + chunk]], precision=config.precision,
                            device=device) for i in range(0, len(samples), chunk)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _threshold_and_evaluate(model, config, splits, device, run_dir, checks: InputChecks) -> dict:
    """Choose the threshold on validation, save the model, evaluate validation and (once) test."""
    model.eval()
    val_paths = [s.path for s in splits["val"]]
    val_y = _labels(splits["val"]).astype(int)
    val_prob = sigmoid(predict_logits(model, val_paths, workers=config.workers, precision=config.precision,
                                      device=device, desc="validation")[0])
    shifted_logit = shifted = None
    if config.shift_report or config.threshold_on == "val+shifts":
        chosen = evenly_spaced(len(splits["val"]), config.shift_images)
        shift_y = val_y[chosen]
        shifted_logit = shifted_logits(model, [splits["val"][i] for i in chosen], cache_dir=_shift_cache(model, config),
                                       precision=config.precision, device=device, workers=config.workers,
                                       engine=config.cache_engine)
        shifted = sigmoid(shifted_logit)
    fit_y, fit_prob, fit_patients = val_y, val_prob, [s.patient for s in splits["val"]]
    if config.threshold_on == "val+shifts":
        fit_y, fit_prob = pool_with_shifts(val_y, val_prob, shift_y, shifted)
        fit_patients = pool_groups_with_shifts(fit_patients, [splits["val"][i].patient for i in chosen],
                                               shifted.shape[1])
    rule = dict(rule=config.threshold_rule, target_sensitivity=config.target_sensitivity)
    threshold = choose_threshold(fit_y, fit_prob, **rule)
    interval = threshold_interval(fit_y, fit_prob, fit_patients, n_boot=config.n_boot, seed=config.seed, **rule)
    log.info("threshold %.4f chosen by rule %s on %s (95%% interval over validation patients %.4f to %.4f)",
             threshold, config.threshold_rule, config.threshold_on, *interval)
    summary = {"model": config.model, "threshold": threshold, "threshold_rule": config.threshold_rule,
               "threshold_on": config.threshold_on, "threshold_ci95": interval,
               "validation": evaluate_split(val_y, val_prob, threshold=threshold, name="val",
                                            out_dir=run_dir / "plots", n_boot=config.n_boot, seed=config.seed)}
    if shifted is not None:
        summary["validation_shifted"] = robustness_report(shift_y, shifted_logit, threshold, tuple(SHIFTS))
        summary["validation_shifted"]["images"] = len(shift_y)
        np.savez_compressed(run_dir / "predictions_val_shifted.npz", labels=shift_y, clean=val_prob[chosen],
                            shifted=shifted, shifts=np.array(list(SHIFTS), dtype=str),
                            paths=np.array([val_paths[i] for i in chosen], dtype=str))
        r = summary["validation_shifted"]
        log.info("validation under acquisition shifts: mean AUC %.4f (worst %.4f), mean sensitivity %.4f, "
                 "mean specificity %.4f (worst %.4f)", r["mean_auc"], r["worst_auc"], r["mean_sensitivity"],
                 r["mean_specificity"], r["worst_specificity"])
    write_predictions(run_dir / "predictions_val.csv", val_paths, val_y, val_prob, threshold)
    small = {"val_auc": summary["validation"]["at_threshold"]["auc"]}
    test = _test_samples(config)
    if test:
        from pneumoscan.checkpoint import LoadedModel
        from pneumoscan.evaluate.report import evaluate_screened
        from pneumoscan.screen import load

        finished = LoadedModel(model=model, threshold=threshold, threshold_rule=config.threshold_rule,
                               checks=checks, path=str(run_dir / MODEL_FILE))
        screener = load(finished, precision=config.precision)  # the screener model.pt will load as
        summary["test"] = evaluate_screened(screener, test, out_dir=run_dir, name="test", n_boot=config.n_boot,
                                            seed=config.seed, plots_dir=run_dir / "plots")
        small.update({f"test_{k}": summary["test"]["at_threshold"][k]
                      for k in ("auc", "accuracy", "sensitivity", "specificity")})
    save_model(run_dir / MODEL_FILE, model, threshold=threshold, threshold_rule=config.threshold_rule,
               metrics=small, settings=settings_io.to_dict(config), checks=checks)
    return summary


def _shift_cache(model: PneumoniaNet, config: TrainConfig) -> str | None:
    """Cache shifted views through the trunk only when the trunk stayed frozen (it is then shared)."""
    return config.cache_dir if "full" not in config.stages else None


def _test_samples(config: TrainConfig) -> list[Sample]:
    if not config.test_split or not Path(config.data).is_dir():
        return []
    if not (Path(config.data) / config.test_split).is_dir():
        log.info("no %s split in %s: skipping the test evaluation", config.test_split, config.data)
        return []
    samples = load_samples(config.data, config.test_split)
    broken = find_unreadable(samples, desc="checking test images")
    return [s for s in samples if s.path not in broken]

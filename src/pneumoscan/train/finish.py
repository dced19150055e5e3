"""What a run does once its stages are trained: fit the input checks, choose the threshold on
validation (and validation under acquisition shifts), save the model, evaluate validation, and screen
the test split once with the saved model (``screen.Screener``, as every user of the model does)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from pneumoscan import settings as settings_io
from pneumoscan.anatomy.segmenter import described as segmenter_described
from pneumoscan.anatomy.segmenter import segmenter_from_state
from pneumoscan.cache import batched_logits
from pneumoscan.data.io import load_image
from pneumoscan.data.labels import DEFAULT_TASK, ClassMap
from pneumoscan.data.records import Sample, find_unreadable, load_samples
from pneumoscan.data.shifts import SHIFTS
from pneumoscan.data.split import evenly_spaced, read_split
from pneumoscan.device import pick_device
from pneumoscan.evaluate.metrics import choose_threshold, threshold_interval
from pneumoscan.evaluate.multiclass import evaluate_multiclass, write_multiclass_predictions
from pneumoscan.evaluate.report import evaluate_screened, evaluate_split, write_json, write_predictions
from pneumoscan.evaluate.robustness import (
    pool_groups_with_shifts,
    pool_with_shifts,
    robustness_report,
    shifted_logits,
)
from pneumoscan.inference.predict import predict_logits, sigmoid, softmax
from pneumoscan.inference.screen import load as load_screener
from pneumoscan.input_checks.checks import InputChecks, InputCheckSettings, shift_layer_of
from pneumoscan.input_checks.fitting import fit_input_checks, model_features
from pneumoscan.models.checkpoint import LoadedModel, replace_checks, save_model, training_facts
from pneumoscan.models.description import describe, metric_summary, task_words
from pneumoscan.models.networks import ScreeningNet, TailAndHead
from pneumoscan.run_folder import RunFolder
from pneumoscan.train.config import TrainConfig
from pneumoscan.train.setup import labels_of, lung_segmenter_state, pool_of, run_config, trained_model
from pneumoscan.train.stages import cache_rows, clean_activations, pooling

log = logging.getLogger(__name__)


def fit_run_input_checks(model: ScreeningNet, config: TrainConfig, settings: InputCheckSettings, splits,
                         device, folder: RunFolder) -> InputChecks:
    """Both input checks, on the final model's features of clean train and validation images (the last
    feature map's for the gate, the trunk's or the last's for the shift score); the fit report goes to
    the folder's ``input_checks.json``."""
    (train_trunk, train_last), (val_trunk, val_last) = split_features(model, config, splits, device)
    shift = (train_trunk, val_trunk) if shift_layer_of(model) == "trunk" else (train_last, val_last)
    checks, report = fit_input_checks(model, train_last, val_last, [s.path for s in splits["train"]], settings,
                                      shift_features=shift, val_images=[s.path for s in splits["val"]],
                                      seed=config.seed, precision=config.precision, device=device)
    write_json(folder.input_checks, {"settings": settings.to_dict(), "fitted_on": report,
                                     "novelty_threshold": checks.shift.threshold})
    return checks


def split_features(model: ScreeningNet, config: TrainConfig, splits, device) -> tuple[tuple, tuple]:
    """((trunk pooled, last pooled) of the clean training images, the same of validation's), read from the
    run's cached trunk activations where its stages cached them."""
    model.eval()
    if "full" in config.stages:
        return tuple(image_features(model, splits[name], config, device) for name in ("train", "val"))
    pool = pool_of(splits)
    clean = clean_activations(model, config, pool, device)
    rows = {name: cache_rows(pool, splits[name], 1) for name in ("train", "val")}
    return tuple((spatial_mean(clean, rows[name]),
                  batched_logits(pooling(model), clean[rows[name]], batch_size=128, precision=config.precision,
                                 device=device)) for name in ("train", "val"))


def refit_input_checks(run_dir: str | Path, settings: InputCheckSettings) -> dict:
    """Fit a finished run's input checks again with ``settings`` (other examples to accept or refuse) and
    save them into its ``model.pt``; the weights, threshold and metrics stay. Returns the fit report."""
    folder = RunFolder(run_dir)
    config = run_config(run_dir)
    device = pick_device(config.device)
    model = trained_model(run_dir).to(device)
    checks = fit_run_input_checks(model, config, settings, read_split(folder.split), device, folder)
    report = json.loads(folder.input_checks.read_text())
    replace_checks(folder.model, checks, report["fitted_on"])
    return report


def spatial_mean(activations: np.ndarray, rows: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Cached trunk activations ``[N, C, h, w]`` (float16 on disk) pooled to ``[len(rows), C]``, a chunk at a time."""
    return np.concatenate([np.asarray(activations[rows[i:i + chunk]], np.float32).mean(axis=(2, 3))
                           for i in range(0, len(rows), chunk)])


def image_features(model: ScreeningNet, samples: list[Sample], config: TrainConfig, device, chunk: int = 256):
    """(trunk pooled, last feature map pooled) of ``samples``' clean images, read a chunk at a time."""
    parts = [model_features(model, [load_image(s.path) for s in samples[i:i + chunk]], precision=config.precision,
                            device=device) for i in range(0, len(samples), chunk)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def validation_logits(run_dir: str | Path, *, shift_images: int = 400) -> dict[str, np.ndarray]:
    """Clean and shifted validation logits of a run's trained model, through the cached trunk.

    Returns ``labels``/``clean`` for every validation image and ``shift_labels``/``shifted``
    (images x shifts) for ``shift_images`` evenly spaced ones.
    """
    config = run_config(run_dir)
    device = pick_device(config.device)
    model = trained_model(run_dir).to(device)
    val = read_split(RunFolder(run_dir).split)["val"]
    clean = batched_logits(TailAndHead(model), clean_activations(model, config, val, device), batch_size=128,
                           precision=config.precision, device=device)
    chosen = evenly_spaced(len(val), shift_images)
    shifted = shifted_logits(model, [val[i] for i in chosen], cache_dir=config.cache_dir, workers=config.workers,
                             precision=config.precision, device=device, engine=config.cache_engine)
    labels = labels_of(val).astype(int)
    return {"labels": labels, "clean": clean, "shift_labels": labels[chosen], "shifted": shifted}


def threshold_and_evaluate(model: ScreeningNet, config: TrainConfig, splits, device, folder: RunFolder,
                           checks: InputChecks, classes: ClassMap = DEFAULT_TASK,
                           test: list[Sample] | None = None) -> dict:
    """Choose the threshold on validation (two classes; more are decided by the most probable class), save
    the model, evaluate validation and (once) test (``test``: its readable images, read from the dataset when
    not given)."""
    model.eval()
    val_paths = [s.path for s in splits["val"]]
    val_y = labels_of(splits["val"]).astype(int)
    val_logits = predict_logits(model, val_paths, workers=config.workers, precision=config.precision, device=device,
                                desc="validation")[0]
    if classes.binary:
        threshold, rule, summary = _binary_validation(model, config, splits, device, folder, val_y, val_logits,
                                                      classes.names)
        small = {"val_auc": summary["validation"]["at_threshold"]["auc"]}
    else:
        threshold, rule = 0.5, "argmax"  # the threshold is not used: the most probable class is the label
        val_prob = softmax(val_logits)
        summary = {"model": config.model, "classes": list(classes.names), "threshold_rule": rule,
                   "validation": evaluate_multiclass(val_y, val_prob, classes.names, name="val", out_dir=folder.plots,
                                                     n_boot=config.n_boot, seed=config.seed)}
        write_multiclass_predictions(folder.predictions("val"), val_paths, val_y, val_prob, classes.names)
        small = {"val_macro_auc": summary["validation"]["at_argmax"]["macro_auc"]}
    described = describe(arch=model.arch, arch_kwargs=model.arch_kwargs, preprocessing=model.preprocessing.to_dict(),
                         classes=classes, threshold=threshold, threshold_rule=rule,
                         words=task_words(classes, config.data, config.task), checks=checks,
                         fitted_on=json.loads(folder.input_checks.read_text())["fitted_on"],
                         threshold_on=summary.get("threshold_on", ""), threshold_ci95=summary.get("threshold_ci95"),
                         training=training_facts(settings_io.to_dict(config)))
    anatomy = lung_segmenter_state(config)
    if anatomy:
        described = replace(described, anatomy=segmenter_described(segmenter_from_state(anatomy)))
    test = test_samples(config, classes) if test is None else test
    if test:
        finished = LoadedModel(model=model, description=described, checks=checks, path=str(folder.model),
                               anatomy=anatomy)
        screener = load_screener(finished, precision=config.precision)  # the screener model.pt will load as
        summary["test"] = evaluate_screened(screener, test, out_dir=folder.root, name="test", n_boot=config.n_boot,
                                            seed=config.seed, plots_dir=folder.plots)
        at = summary["test"].get("at_threshold") or summary["test"]["at_argmax"]
        keys = ("auc", "accuracy", "sensitivity", "specificity") if classes.binary else ("accuracy", "macro_f1",
                                                                                          "macro_auc")
        small.update({f"test_{k}": at[k] for k in keys})
    metrics = {split: metric_summary(summary[key]) for split, key in (("validation", "validation"), ("test", "test"))
               if key in summary} | {"headline": small}
    shifted = {k: v for k, v in summary.get("validation_shifted", {}).items() if k.startswith(("mean_", "worst_"))}
    if shifted:
        metrics["validation_under_acquisition_shifts"] = shifted
    save_model(folder.model, model, replace(described, metrics=metrics), settings=settings_io.to_dict(config),
               checks=checks, anatomy=anatomy)
    return summary


def _binary_validation(model, config: TrainConfig, splits, device, folder: RunFolder, val_y, val_logits,
                       names: tuple[str, ...]):
    """(threshold, rule, summary): the threshold chosen on validation (and validation under acquisition
    shifts), with validation's metrics at it."""
    val_paths = [s.path for s in splits["val"]]
    val_prob = sigmoid(val_logits)
    shifted_logit = shifted = None
    if config.shift_report or config.threshold_on == "val+shifts":
        chosen = evenly_spaced(len(splits["val"]), config.shift_images)
        shift_y = val_y[chosen]
        shifted_logit = shifted_logits(model, [splits["val"][i] for i in chosen],
                                       cache_dir=config.cache_dir if "full" not in config.stages else None,
                                       precision=config.precision, device=device, workers=config.workers,
                                       engine=config.cache_engine)  # shared cache only while the trunk is frozen
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
               "validation": evaluate_split(val_y, val_prob, threshold=threshold, name="val", out_dir=folder.plots,
                                            n_boot=config.n_boot, seed=config.seed, names=names)}
    if shifted is not None:
        summary["validation_shifted"] = _shift_summary(folder, shift_y, shifted_logit, shifted, threshold,
                                                       val_prob[chosen], [val_paths[i] for i in chosen])
    write_predictions(folder.predictions("val"), val_paths, val_y, val_prob, threshold, names=names)
    return threshold, config.threshold_rule, summary


def _shift_summary(folder: RunFolder, labels, shifted_logit, shifted, threshold: float, clean, paths) -> dict:
    """Validation metrics under every acquisition shift; the predictions go to the folder."""
    report = {**robustness_report(labels, shifted_logit, threshold, tuple(SHIFTS)), "images": len(labels)}
    np.savez_compressed(folder.shifted_predictions, labels=labels, clean=clean, shifted=shifted,
                        shifts=np.array(list(SHIFTS), dtype=str), paths=np.array(paths, dtype=str))
    log.info("validation under acquisition shifts: mean AUC %.4f (worst %.4f), mean sensitivity %.4f, "
             "mean specificity %.4f (worst %.4f)", report["mean_auc"], report["worst_auc"],
             report["mean_sensitivity"], report["mean_specificity"], report["worst_specificity"])
    return report


def test_samples(config: TrainConfig, classes: ClassMap = DEFAULT_TASK) -> list[Sample]:
    """The readable images of the dataset's test split ([] when it has none)."""
    if not config.test_split or not Path(config.data).is_dir():
        return []
    if not (Path(config.data) / config.test_split).is_dir():
        log.info("no %s split in %s: skipping the test evaluation", config.test_split, config.data)
        return []
    samples = load_samples(config.data, config.test_split, classes)
    broken = find_unreadable(samples, desc="checking test images")
    return [s for s in samples if s.path not in broken]

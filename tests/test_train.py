"""Tests of pneumoscan.train: tiny runs on phantoms; resume after a kill; reproducibility; the cache."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import LIGHT_CHECKS, LIGHT_SHIFT_IMAGES

from pneumoscan import cache as cache_module
from pneumoscan import device as device_module
from pneumoscan.data import Augmentation, Preprocessing, XRayDataset, read_split, scan_kaggle_split
from pneumoscan.data.records import Sample
from pneumoscan.data.shifts import SHIFTS
from pneumoscan.input_checks.checks import InputCheckSettings
from pneumoscan.models.checkpoint import load_model
from pneumoscan.models.networks import ClassifierHead, build_model
from pneumoscan.run_folder import RunFolder
from pneumoscan.settings import load_settings
from pneumoscan.train import TrainConfig, stages, train
from pneumoscan.train import loop as loop_module
from pneumoscan.train.config import FullStage, HeadStage, TailStage
from pneumoscan.train.recipes import recipe_settings
from pneumoscan.train.setup import prepare_run_folder


def tiny_config(root, out, cache, **overrides) -> TrainConfig:
    """Seconds-long settings: 64 px images, 2 views, 2 + 2 epochs, no worker processes, light input checks."""
    settings = dict(data=str(root), out=str(out), model="densenet121", weights="none", image_size=64,
                    train_views=2, batch_size=16, workers=0, n_boot=50, cache_dir=str(cache), val_fraction=0.25,
                    shift_images=LIGHT_SHIFT_IMAGES, input_checks=InputCheckSettings(**LIGHT_CHECKS),
                    head=HeadStage(epochs=2, lr=3e-3), tail=TailStage(epochs=2, lr=1e-3), full=FullStage(epochs=2))
    settings.update(overrides)
    return TrainConfig(**settings)


def final_state(run_dir):
    return load_model(run_dir).model.state_dict()


def test_two_stage_run_writes_a_complete_run_folder(phantom_root, tmp_path, monkeypatch):
    # where bf16 is emulated, its fallback warning must come after the invocation's first line, or a resumed
    # run's time (bench.timing reads it from the log) would stretch the killed span across the gap before the resume
    monkeypatch.setattr(device_module, "native_bf16", lambda device_type: False)
    device_module._warn_emulated_bf16.cache_clear()
    run = train(tiny_config(phantom_root, tmp_path / "run", tmp_path / "cache", precision="bf16"))
    first_line, second_line = (run / "train.log").read_text().splitlines()[:2]
    assert "pneumoscan train:" in first_line and "bf16 was asked for" in second_line
    for name in ("config.json", "split.csv", "model.pt", "metrics.json", "history.json", "train.log",
                 "training_curves.png", "predictions_val.csv", "predictions_test.csv", "plots/roc_test.png"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"threshold", "threshold_ci95", "validation", "test", "timings"}
    assert metrics["threshold_ci95"][0] <= metrics["threshold"] <= metrics["threshold_ci95"][1]
    assert metrics["timings"]["total_seconds"] > 0
    history = json.loads((run / "history.json").read_text())
    assert [(r["stage"], r["epoch"]) for r in history] == [("head", 1), ("head", 2), ("tail", 1), ("tail", 2)]
    assert {"train_loss", "train_accuracy", "train_auc", "val_loss", "val_accuracy", "val_auc"} <= set(history[0])
    splits = read_split(run / "split.csv")
    assert not {s.patient for s in splits["train"]} & {s.patient for s in splits["val"]}
    loaded = load_model(run)
    assert loaded.threshold == pytest.approx(metrics["threshold"])
    assert json.loads((run / "config.json").read_text())["stages"] == ["head", "tail"]
    shifted = np.load(run / "predictions_val_shifted.npz")
    assert list(shifted["shifts"]) == list(SHIFTS)
    assert shifted["shifted"].shape == (len(shifted["labels"]), len(SHIFTS))
    log = (run / "train.log").read_text()
    assert f"activation cache: {tmp_path / 'cache'} (0 B there now" in log
    for index, step in enumerate(("head", "tail", "input checks", "threshold and test"), start=1):
        assert f"stage {index}/4: {step}" in log
    assert "stage 1/4: head (the whole run's ETA follows this step)" in log
    for later in ("tail", "input checks", "threshold and test"):
        assert re.search(rf"stage \d/4: {later}; about \d+ (s|min) left in the run \(ETA \d\d:\d\d\)", log), later
    assert {"head", "tail", "input_checks", "threshold_and_test"} <= set(metrics["timings"])


def test_the_quick_recipe_caches_the_clean_views_once_and_trains_the_head_alone(phantom_root, tmp_path):
    quick = load_settings(TrainConfig, base=recipe_settings("quick"))
    run = train(tiny_config(phantom_root, tmp_path / "run", tmp_path / "cache", stages=quick.stages,
                            train_views=quick.train_views, augmentation=quick.augmentation,
                            threshold_on=quick.threshold_on, shift_report=quick.shift_report))
    history = json.loads((run / "history.json").read_text())
    assert {r["stage"] for r in history} == {"head"}
    assert len(list((tmp_path / "cache").glob("activations-*"))) == 1  # the clean views, trained and validated on
    log = (run / "train.log").read_text()
    assert "caching augmented views" not in log and "stage 3/3: threshold and test" in log
    assert json.loads((run / "metrics.json").read_text())["test"]["at_threshold"]["auc"] >= 0


def test_the_frozen_trunk_stages_need_a_pretrained_model():
    with pytest.raises(ValueError, match="stages head and tail train on a frozen pretrained trunk"):
        TrainConfig(model="baseline_cnn", stages=("head",))


def test_a_killed_run_resumes_to_the_same_model(phantom_root, tmp_path, monkeypatch):
    config = tiny_config(phantom_root, tmp_path / "whole", tmp_path / "cache", tail=TailStage(epochs=3))
    whole = final_state(train(config))

    real_epoch = loop_module._train_one_epoch
    calls = {"n": 0}

    def dies_in_the_fourth_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # head 1, head 2, tail 1, then killed during tail 2
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    killed = replace(config, out=str(tmp_path / "killed"))
    monkeypatch.setattr(loop_module, "_train_one_epoch", dies_in_the_fourth_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(killed)
    monkeypatch.setattr(loop_module, "_train_one_epoch", real_epoch)
    with pytest.raises(FileExistsError, match="--resume"):
        train(killed)
    resumed = final_state(train(killed, resume=True))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    timings = {name: json.loads((tmp_path / name / "metrics.json").read_text())["timings"]
               for name in ("whole", "killed")}
    assert "resumed" not in timings["whole"] and timings["killed"]["resumed"] is True
    assert (tmp_path / "killed" / "train.log").read_text().count("pneumoscan train:") == 2  # the killed one, the resume


def test_same_seed_same_metrics_and_resume_needs_same_settings(phantom_root, tmp_path):
    one_epoch = dict(head=HeadStage(epochs=1), tail=TailStage(epochs=1))
    first = train(tiny_config(phantom_root, tmp_path / "a", tmp_path / "cache", **one_epoch))
    second = train(tiny_config(phantom_root, tmp_path / "b", tmp_path / "cache", **one_epoch))
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (first, second))
    assert m1["validation"]["at_threshold"]["auc"] == m2["validation"]["at_threshold"]["auc"]
    assert m1["test"]["at_threshold"]["confusion_matrix"] == m2["test"]["at_threshold"]["confusion_matrix"]
    with pytest.raises(ValueError, match="seed"):
        train(tiny_config(phantom_root, tmp_path / "a", tmp_path / "cache", seed=5, **one_epoch), resume=True)
    # a setting newer than the run takes today's default when the run is read back
    saved = json.loads((first / "config.json").read_text())
    del saved["cache_engine"]
    (first / "config.json").write_text(json.dumps(saved))
    same = dict(head=HeadStage(epochs=1), tail=TailStage(epochs=1))
    prepare_run_folder(RunFolder(first), tiny_config(phantom_root, first, tmp_path / "cache", **same).resolved(),
                       resume=True)
    with pytest.raises(ValueError, match="cache_engine"):
        prepare_run_folder(RunFolder(first), tiny_config(phantom_root, first, tmp_path / "cache", cache_engine="torch",
                                                         **same).resolved(), resume=True)


def test_baseline_trains_end_to_end_on_images(phantom_root, tmp_path):
    run = train(tiny_config(phantom_root, tmp_path / "cnn", tmp_path / "cache", model="baseline_cnn",
                            full=FullStage(epochs=3, lr=3e-3)))
    history = json.loads((run / "history.json").read_text())
    assert {r["stage"] for r in history} == {"full"}
    assert load_model(run).model.arch == "baseline_cnn"


def test_cache_is_reused_and_a_killed_fill_resumes(phantom_root, tmp_path, monkeypatch, caplog):
    samples = scan_kaggle_split(phantom_root, "train")[:40]
    trunk = build_model("densenet121", preprocessing=Preprocessing(image_size=64)).trunk
    args = dict(augmentation=Augmentation(), views=2, cache_dir=tmp_path, batch_size=8, workers=0)
    reference = np.array(cache_module.cached_activations(trunk, samples, Preprocessing(image_size=64), **args))
    assert reference.shape[0] == 80 and reference.dtype == np.float16

    other = tmp_path / "other"
    monkeypatch.setattr(cache_module, "FLUSH_EVERY", 1)
    monkeypatch.setattr(cache_module, "LOG_EVERY_SECONDS", 0.0)
    real_write = cache_module._write_progress

    def dies_after_three_batches(path, done):
        real_write(path, done)
        if done >= 24:
            raise KeyboardInterrupt

    monkeypatch.setattr(cache_module, "_write_progress", dies_after_three_batches)
    with pytest.raises(KeyboardInterrupt):
        with caplog.at_level(logging.INFO, logger="pneumoscan.cache"):
            cache_module.cached_activations(trunk, samples, Preprocessing(image_size=64),
                                            **{**args, "cache_dir": other})
    saved = [r.getMessage() for r in caplog.records if r.getMessage().endswith("saved")]
    assert saved[-1].endswith("16 of 80 saved")  # logged up to the last save before the kill
    monkeypatch.setattr(cache_module, "_write_progress", real_write)
    resumed = cache_module.cached_activations(trunk, samples, Preprocessing(image_size=64),
                                              **{**args, "cache_dir": other})
    np.testing.assert_array_equal(reference, resumed)
    assert len(list(tmp_path.glob("activations-*"))) == 1


def test_two_processes_wanting_one_cache_fill_it_once(phantom_root, tmp_path, monkeypatch):
    samples = scan_kaggle_split(phantom_root, "train")[:8]
    trunk = build_model("densenet121", preprocessing=Preprocessing(image_size=64)).trunk
    real_fill, fills = cache_module._fill_folder, []

    def slow_fill(*args):
        fills.append(args[0])
        time.sleep(1.0)  # the other caller arrives while this one fills
        return real_fill(*args)

    monkeypatch.setattr(cache_module, "_fill_folder", slow_fill)
    args = dict(views=1, cache_dir=tmp_path, batch_size=4, workers=0)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: np.array(cache_module.cached_activations(
            trunk, samples, Preprocessing(image_size=64), **args)), range(2)))
    assert len(fills) == 1  # the second waited for the first, then read its cache
    np.testing.assert_array_equal(results[0], results[1])


def test_cache_key_follows_file_content_not_modification_time(phantom_root, tmp_path):
    for image in sorted((phantom_root / "train" / "NORMAL").iterdir())[:3]:
        shutil.copy2(image, tmp_path / image.name)
    samples = [Sample(path=str(path), label=0, patient=path.stem) for path in sorted(tmp_path.iterdir())]
    before = cache_module.files_fingerprint(samples)
    os.utime(samples[0].path, ns=(1, 1))  # the same bytes provisioned again: a new mtime
    assert cache_module.files_fingerprint(samples) == before
    Path(samples[1].path).write_bytes(Path(samples[2].path).read_bytes())  # new bytes
    assert cache_module.files_fingerprint(samples) != before


def test_cached_views_equal_the_trunk_on_the_same_views(phantom_root, tmp_path):
    samples = scan_kaggle_split(phantom_root, "train")[:6]
    pre = Preprocessing(image_size=64)
    trunk = build_model("densenet121", preprocessing=pre).trunk.eval()
    cached = cache_module.cached_activations(trunk, samples, pre, augmentation=Augmentation(), views=3,
                                             cache_dir=tmp_path, batch_size=4, workers=0, precision="bf16")
    views = XRayDataset(samples, pre, augmentation=Augmentation(), views=3)
    with torch.inference_mode():
        direct = trunk(torch.stack([views[k][0] for k in range(18)])).numpy()
    for k in range(18):
        assert np.corrcoef(direct[k].ravel(), cached[k].astype(np.float32).ravel())[0, 1] > 0.995


def test_onnxruntime_cache_equals_pytorch_cache_and_keys_apart(phantom_root, tmp_path, caplog):
    samples = scan_kaggle_split(phantom_root, "train")[:6]
    pre = Preprocessing(image_size=64)
    trunk = build_model("densenet121", preprocessing=pre).trunk.eval()
    args = dict(augmentation=Augmentation(), views=2, cache_dir=tmp_path, batch_size=4, workers=0, precision="fp32")
    by_torch = np.array(cache_module.cached_activations(trunk, samples, pre, engine="torch", **args), dtype=np.float32)
    with caplog.at_level(logging.INFO):
        by_ort = np.array(cache_module.cached_activations(trunk, samples, pre, engine="onnxruntime", **args),
                          dtype=np.float32)
    assert "12 views with onnxruntime (fp32)" in caplog.text
    assert not [r for r in caplog.records if r.name.startswith(("onnxscript", "onnx_ir"))]  # exporter kept quiet
    assert len(list(tmp_path.glob("activations-*"))) == 2  # one cache per engine
    np.testing.assert_allclose(by_ort, by_torch, atol=2e-3 * np.abs(by_torch).max())


def test_engine_rule_uses_onnxruntime_only_for_large_fp32_cpu_caches():
    cpu, big = torch.device("cpu"), cache_module.ONNX_MIN_VIEWS
    assert cache_module.pick_engine("auto", "fp32", cpu, big) == "onnxruntime"
    assert cache_module.pick_engine("auto", "fp32", cpu, big - 1) == "torch"
    assert cache_module.pick_engine("auto", "bf16", cpu, big) == "torch"
    assert cache_module.pick_engine("auto", "fp32", torch.device("cuda"), big) == "torch"
    with pytest.raises(ValueError, match="fp32 on the CPU"):
        cache_module.pick_engine("onnxruntime", "bf16", cpu, big)
    with pytest.raises(ValueError, match="use one of"):
        cache_module.pick_engine("tensorrt", "fp32", cpu, big)


def test_cache_engine_setting_reaches_every_cache_of_a_run(phantom_root, tmp_path, monkeypatch):
    asked = []
    real_pick = cache_module.pick_engine

    def recording_pick(engine, *args):
        asked.append(engine)
        return real_pick(engine, *args)

    monkeypatch.setattr(cache_module, "pick_engine", recording_pick)
    train(tiny_config(phantom_root, tmp_path / "run", tmp_path / "cache", precision="fp32", cache_engine="torch",
                      tail=TailStage(epochs=1), head=HeadStage(epochs=1)))
    assert len(asked) >= 3 and set(asked) == {"torch"}  # augmented, clean and shifted views
    with pytest.raises(ValueError, match="cache_engine"):
        tiny_config(phantom_root, tmp_path, tmp_path, cache_engine="tensorrt")


def test_auto_engine_falls_back_to_pytorch_when_onnx_runtime_cannot_run_the_trunk(phantom_root, tmp_path,
                                                                                    monkeypatch, caplog):
    samples = scan_kaggle_split(phantom_root, "train")[:4]
    pre = Preprocessing(image_size=64)
    trunk = build_model("densenet121", preprocessing=pre).trunk.eval()

    def broken_exporter(module, dataset):
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(cache_module, "_onnx_runner", broken_exporter)
    monkeypatch.setattr(cache_module, "ONNX_MIN_VIEWS", 1)
    args = dict(cache_dir=tmp_path, batch_size=4, workers=0, precision="fp32")
    with caplog.at_level(logging.WARNING, logger="pneumoscan.cache"):
        auto = np.array(cache_module.cached_activations(trunk, samples, pre, engine="auto", **args))
    assert "no exporter here" in caplog.text and "computing with PyTorch" in caplog.text
    by_torch = np.array(cache_module.cached_activations(trunk, samples, pre, engine="torch", **args))
    np.testing.assert_array_equal(auto, by_torch)  # the same cache: the fallback is keyed as PyTorch
    assert len(list(tmp_path.glob("activations-*"))) == 1
    with pytest.raises(RuntimeError, match="no exporter here"):  # asked for by name: no silent fallback
        cache_module.cached_activations(trunk, samples, pre, engine="onnxruntime", **args)


@pytest.mark.parametrize("select_on, kept_epoch", [("auc", 1), ("accuracy", 3)])
def test_the_kept_epoch_is_the_best_on_the_chosen_validation_score(tmp_path, select_on, kept_epoch):
    # three classes, scripted validation probabilities (as log-probabilities, which softmax returns): epoch 1
    # ranks perfectly (AUC 1) but misclassifies one image, epoch 3 classifies every image right but ranks a
    # a class-0 image above a class-1 one in column 1 (AUC < 1); epochs 2 and 4 get every image wrong
    labels = np.array([0, 0, 1, 1, 2, 2])
    ranks_best = [[.7, .2, .1], [.7, .2, .1], [.45, .4, .15], [.2, .7, .1], [.1, .2, .7], [.1, .2, .7]]
    classifies_best = [[.5, .45, .05], [.7, .2, .1], [.3, .4, .3], [.2, .7, .1], [.1, .2, .7], [.1, .2, .7]]
    all_wrong = np.roll(np.full((3, 3), 0.1) + 0.7 * np.eye(3), 1, axis=1)[labels]
    scripted = iter(np.log(np.array(p, dtype=np.float32)) for p in [ranks_best, all_wrong, classifies_best, all_wrong])
    module = torch.nn.Linear(2, 3)
    kept = {}

    def validate(m):
        return labels, next(scripted)

    class Batches:
        def __len__(self):
            return 1

        def epoch(self, epoch):
            yield torch.randn(6, 2), torch.tensor(labels).float(), 6

    def remember(row):
        kept[row["epoch"]] = copy.deepcopy(module.state_dict())

    settings = loop_module.StageSettings(name="tail", epochs=4, lr=1e-2, lr_min=1e-3, weight_decay=0.0, patience=5,
                                         pos_weight=1.0, seed=0, precision="fp32", device=torch.device("cpu"),
                                         class_weights=(1.0, 1.0, 1.0), select_on=select_on)
    history = []
    loop_module.run_stage(module, list(module.parameters()), Batches(), validate, settings,
                          state_path=tmp_path / "state.pt", history=history, on_epoch=remember)
    assert history[0]["val_auc"] == 1.0 and history[2]["val_accuracy"] == 1.0 > history[0]["val_accuracy"]
    assert history[2]["val_auc"] < 1.0
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, kept[kept_epoch][name])


def test_auto_selection_follows_auc_for_two_classes_and_accuracy_for_more():
    config = TrainConfig()
    assert config.selection_score(2) == "auc" and config.selection_score(4) == "accuracy"
    assert replace(config, select_on="auc").selection_score(4) == "auc"
    with pytest.raises(ValueError, match="select_on"):
        TrainConfig(select_on="f1")


def test_label_smoothing_reaches_the_cross_entropy_of_many_classes_and_not_the_two_class_bce():
    from pneumoscan.train.stages import stage_settings

    config = TrainConfig()
    many = stage_settings("tail", config, (1.0, 1.2, 0.9), torch.device("cpu"))
    assert many.select_on == "accuracy" and many.loss().label_smoothing == pytest.approx(0.1)
    two = stage_settings("tail", config, (1.5,), torch.device("cpu"))
    assert two.select_on == "auc" and isinstance(two.loss(), torch.nn.BCEWithLogitsLoss)
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)


def test_a_head_that_dies_in_its_stage_is_trained_again_at_a_third_of_its_learning_rate(phantom_root, tmp_path,
                                                                                           monkeypatch):
    real_run_stage, calls = stages.run_stage, []

    def run_stage_that_kills_the_first_head(module, params, source, validate, settings, **common):
        calls.append((settings.name, settings.lr))
        trained = real_run_stage(module, params, source, validate, settings, **common)
        if settings.name == "head":  # every hidden unit off for any input, as a too-large first step can leave it
            hidden = module.head[3]
            torch.nn.init.zeros_(hidden.weight)
            torch.nn.init.constant_(hidden.bias, -1.0)
        return trained

    monkeypatch.setattr(stages, "run_stage", run_stage_that_kills_the_first_head)
    run = train(tiny_config(phantom_root, tmp_path / "run", tmp_path / "cache", tail=TailStage(epochs=1, lr=1e-3)))
    assert calls == [("head", 3e-3), ("head-retry", pytest.approx(1e-3)), ("tail", 1e-3)]
    history = json.loads((run / "history.json").read_text())
    assert [r["stage"] for r in history] == ["head", "head", "head-retry", "head-retry", "tail"]
    assert [r["global_epoch"] for r in history] == [1, 2, 3, 4, 5]
    hidden = load_model(run).model.head[3]
    assert hidden.bias.max() > -1.0 and hidden.weight.abs().sum() > 0
    assert "training a fresh head" in (run / "train.log").read_text()


def test_a_head_is_dead_only_when_no_unit_fires_for_any_example():
    head = ClassifierHead(4, hidden=3)
    pooled = np.abs(np.random.default_rng(0).normal(size=(50, 4))).astype(np.float32)
    torch.nn.init.zeros_(head[3].weight)
    torch.nn.init.constant_(head[3].bias, -0.1)
    assert stages.head_is_dead(head, pooled, chunk=16)
    with torch.no_grad():
        head[3].weight[2, 0] = 1.0  # one unit fires on the examples whose first feature is above 0.1
    assert not stages.head_is_dead(head, pooled, chunk=16)


def test_measuring_the_trunk_output_leaves_the_model_as_it_was():
    from pneumoscan.train.run import trunk_output_size

    model = build_model("densenet121", preprocessing=Preprocessing(image_size=64)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert trunk_output_size(model, 64) == 512 * 2 * 2
    assert model.trunk.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

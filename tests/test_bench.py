"""Tests of code that only the benchmarks use: test-time mirroring, onnxruntime's int8 quantization, run
times across invocations, CPU steal time and run records."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from bench.brain_mri_compare import record_name
from bench.brain_mri_explain import head_mask, mass_outside
from bench.common import replace_section
from bench.compare import recorded_comparison
from bench.inference import quantize_int8
from bench.records import RunRecords, protocol_settings, read_record
from bench.timing import cpu_times, seconds_across_invocations, steal_share, training_seconds, was_resumed

from pneumoscan.data import Preprocessing
from pneumoscan.export.files import export_onnx
from pneumoscan.inference.runtime import OnnxModel
from pneumoscan.models.checkpoint import LoadedModel
from pneumoscan.models.networks import build_model
from pneumoscan.settings import to_dict
from pneumoscan.studies.compare import METRICS, CompareConfig, comparison_markdown, seed_summary
from pneumoscan.train import TrainConfig

SMALL = Preprocessing(image_size=64)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_int8_model_keeps_outputs_and_metadata(tmp_path):
    torch.manual_seed(0)
    loaded = LoadedModel.of(build_model("baseline_cnn", preprocessing=SMALL).eval(), threshold=0.3)
    fp32 = export_onnx(loaded, tmp_path / "m.onnx")
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", images(16, seed=3).numpy())
    runtime = OnnxModel(int8)
    assert runtime.description.threshold == 0.3 and runtime.preprocessing == SMALL  # metadata carried over
    got, reference = runtime.run(images(4).numpy()), OnnxModel(fp32).run(images(4).numpy())
    assert got["probabilities"].shape == (4, 2) and got["heatmaps"].shape == (4, 2, 64, 64)
    assert np.isfinite(got["heatmaps"]).all()
    assert np.abs(got["probabilities"] - reference["probabilities"]).max() < 0.05


def test_a_resumed_runs_time_sums_its_invocations(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("2026-11-22 22:00:00,000 INFO pneumoscan.train.run: pneumoscan train: model m, stages head\n"
                   "2026-11-22 22:10:00,500 INFO pneumoscan.train.loop: stage head epoch 1\n"
                   "Traceback (most recent call last):\n"
                   "2026-11-22 23:00:00,000 INFO pneumoscan.train.run: pneumoscan train: model m, stages head\n"
                   "2026-11-22 23:00:01,000 INFO pneumoscan.train.run: resuming: stages done []\n"
                   "2026-11-22 23:05:00,000 INFO pneumoscan.train.run: run finished\n")
    assert seconds_across_invocations(log) == 600.5 + 300.0  # the hour between the kill and the resume is left out


def test_a_run_resumed_within_its_first_stage_counts_every_invocation(tmp_path):
    # runs resumed inside their first stage were not flagged "resumed" in metrics.json before the flag
    # also looked at the stage checkpoint; their log still shows each invocation
    (tmp_path / "metrics.json").write_text(json.dumps({"timings": {"full": 200.0, "total_seconds": 300.0}}))
    (tmp_path / "train.log").write_text(
        "2026-11-23 05:00:00,000 INFO pneumoscan.train.run: pneumoscan train: model m, stages full\n"
        "2026-11-23 05:10:00,000 INFO pneumoscan.train.loop: stage full epoch 1\n"
        "2026-11-23 06:00:00,000 INFO pneumoscan.train.run: pneumoscan train: model m, stages full\n"
        "2026-11-23 06:05:00,000 INFO pneumoscan.train.run: run finished\n")
    assert was_resumed(tmp_path) and training_seconds(tmp_path) == 600.0 + 300.0
    (tmp_path / "train.log").write_text(
        "2026-11-23 06:00:00,000 INFO pneumoscan.train.run: pneumoscan train: model m, stages full\n")
    assert not was_resumed(tmp_path) and training_seconds(tmp_path) == 300.0


def test_steal_share_is_the_stolen_part_of_all_cpu_time_between_two_readings():
    #                  user nice system idle iowait irq softirq steal guest guest_nice
    before = cpu_times("cpu  1000 0 100 800 0 0 0 100 0 0\ncpu0 500 0 50 400 0 0 0 50 0 0\n")
    after = cpu_times("cpu  1500 0 150 900 0 0 0 450 0 0\ncpu0 750 0 75 450 0 0 0 225 0 0\n")
    assert before == (100, 2000) and after == (450, 3000)
    assert steal_share(before, after) == 0.35  # 350 of the 1000 jiffies in between went to other guests
    assert steal_share(None, after) is None and steal_share(after, after) is None
    now = steal_share(cpu_times())  # on Linux, the share since the line above; elsewhere no reading at all
    assert now is None or 0.0 <= now <= 1.0


def test_run_records_let_a_comparison_span_sessions_without_retraining(phantom_root, tiny_settings, tmp_path):
    records = RunRecords(tmp_path / "records", "commit abc")
    config = CompareConfig(data=str(phantom_root), out=str(tmp_path / "cmp"), models=("baseline_cnn",),
                           base_config=str(tiny_settings), cache_dir=str(tmp_path / "cache"))
    first = recorded_comparison(config, records)
    record_file = records.folder / "baseline_cnn_seed0.json"
    record = json.loads(record_file.read_text())
    assert record["provenance"] == "commit abc" and len(record["prob"]) == len(record["y"]) > 0
    assert "data" not in record["settings"] and record["settings"]["model"] == "baseline_cnn"

    shutil.rmtree(tmp_path / "cmp")  # a new session: the run folders are gone, the records are kept
    again = recorded_comparison(config, records)
    assert again["runs"]["finished_earlier"] == 1 and not (tmp_path / "cmp" / "baseline_cnn").exists()
    assert again["models"]["baseline_cnn"]["auc"]["values"] == first["models"]["baseline_cnn"]["auc"]["values"]
    assert again["models"]["baseline_cnn"]["train_seconds"] == first["models"]["baseline_cnn"]["train_seconds"]
    # the total counts the reused run's own time, not only this invocation's few seconds of reporting
    assert again["wall_seconds"] >= first["runs"]["train_seconds_sum"] > again["invocation_seconds"]
    assert record["precision"] in ("bf16", "fp32") and "precision" not in record["settings"]

    # the precision asked for is not the protocol (records made before it was left out still name it)
    record_file.write_text(json.dumps({**record, "settings": {**record["settings"], "precision": "bf16"}}))
    in_fp32 = recorded_comparison(replace(config, precision="fp32"), records)
    assert in_fp32["runs"]["finished_earlier"] == 1
    assert in_fp32["models"]["baseline_cnn"]["precision_per_seed"] == [record["precision"]]

    other = tmp_path / "other.json"  # another protocol: the record does not stand in for it
    other.write_text(json.dumps({**json.loads(tiny_settings.read_text()), "full": {"epochs": 1}}))
    changed = recorded_comparison(replace(config, base_config=str(other), precision="fp32"), records)
    assert changed["runs"]["finished_earlier"] == 0 and (tmp_path / "cmp" / "baseline_cnn" / "seed0").exists()
    assert json.loads((tmp_path / "cmp" / "baseline_cnn" / "seed0" / "config.json").read_text())["precision"] == "fp32"
    assert changed["models"]["baseline_cnn"]["precision_per_seed"] == ["fp32"]
    assert json.loads(record_file.read_text())["settings"]["full"]["epochs"] == 1


def test_a_record_whose_time_is_marked_not_comparable_reports_no_training_time(tmp_path):
    config = TrainConfig(data="d", model="densenet121")
    path = tmp_path / "densenet121_seed0.json"
    path.write_text(json.dumps({"settings": protocol_settings(config), "train_seconds": 30000.0, "seed": 0,
                                "train_seconds_comparable": False, "train_seconds_note": "resumed across sessions"}))
    assert read_record(path, config)["train_seconds"] is None
    assert RunRecords(tmp_path, "").not_comparable() == {"densenet121_seed0": "resumed across sessions"}
    run = {"parameters": 10, "inference_ms_per_image": 2.0, "threshold": 0.5, "ci95": {k: [0.8, 0.9] for k in METRICS},
           **{k: 0.8 for k in METRICS}}
    summary = seed_summary([{**run, "seed": 0, "train_seconds": None}, {**run, "seed": 1, "train_seconds": 5000.0}])
    assert summary["train_seconds_max"] == 5000.0 and summary["train_seconds_per_seed"] == [None, 5000.0]
    only_unknown = seed_summary([{**run, "seed": 0, "train_seconds": None}])
    table = comparison_markdown({"protocol": {"seeds": 1}, "models": {"m": only_unknown}, "pairs": {}})
    assert only_unknown["train_seconds_max"] is None and "| 10 | n/a | 2.0 |" in table
    assert "Paired tests" not in table  # one model: no empty table of pairs


def test_how_the_activations_were_computed_does_not_define_a_run():
    config = TrainConfig(data="d", model="densenet121")
    from_before_the_setting = {k: v for k, v in to_dict(config).items() if k != "cache_engine"}
    assert protocol_settings(from_before_the_setting) == protocol_settings(replace(config, cache_engine="torch"))
    assert protocol_settings(config) != protocol_settings(replace(config, tail=replace(config.tail, epochs=3)))


def test_the_head_mask_of_an_mri_slice_is_its_largest_bright_region_with_holes_filled():
    yy, xx = np.mgrid[0:64, 0:64]
    head = (yy - 32) ** 2 + (xx - 30) ** 2 < 20 ** 2
    gray = np.where(head, 0.7, 0.02).astype(np.float32)
    gray[28:36, 26:34] = 0.05  # a dark lesion inside the head: a hole, still the head
    gray[2:5, 58:62] = 0.9     # a bright label in the corner: not the largest region
    mask = head_mask(gray)
    assert (mask == head).mean() > 0.99 and not mask[3, 60]
    inside, outside = np.where(head, 1.0, 0.0), np.where(head, 0.0, 1.0)
    assert mass_outside(inside, mask) < 0.01 and mass_outside(outside, mask) > 0.99
    assert np.isnan(mass_outside(np.zeros((64, 64)), mask))


def test_brain_mri_records_of_the_two_tasks_never_share_a_name():
    """The 4-class records keep the names they were written under; tumour vs no tumour gets its own."""
    assert record_name("densenet121", 1, "4class") == "densenet121_seed1"
    names = {record_name(m, s, t) for m in ("densenet121", "resnet50") for s in (0, 1) for t in ("4class", "binary")}
    assert len(names) == 8


def test_a_benchmark_rewrites_only_its_own_section_of_a_document(tmp_path):
    document = tmp_path / "results.md"
    document.write_text("# R\n<!-- demo:begin -->\nold\n<!-- demo:end -->\nkept\n")
    replace_section(document, "demo", "new numbers")
    assert document.read_text() == "# R\n<!-- demo:begin -->\nnew numbers\n<!-- demo:end -->\nkept\n"
    with pytest.raises(ValueError, match="no <!-- other:begin -->"):
        replace_section(document, "other", "x")

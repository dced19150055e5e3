"""Tests of pneumoscan.studies.compare and pneumoscan.studies.tune on phantoms: a tiny comparison and tiny studies."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from functools import partial

import optuna
import pytest
import torch
from bench.records import RunRecords

from pneumoscan.settings import load_settings
from pneumoscan.studies.compare import (
    METRICS,
    CompareConfig,
    ablation_budget,
    ablation_result,
    ablation_run_summary,
    ablation_runs,
    compare,
    comparison_markdown,
    seed_summary,
    train_ablation_run,
)
from pneumoscan.studies.tune import TuneConfig, open_study, tune
from pneumoscan.train import TrainConfig


def test_tiny_comparison_with_two_seeds(phantom_root, tiny_settings, tmp_path):
    config = CompareConfig(data=str(phantom_root), out=str(tmp_path / "cmp"), models=("densenet121", "baseline_cnn"),
                           seeds=2, weights=("densenet121=none",), base_config=str(tiny_settings),
                           cache_dir=str(tmp_path / "cache"))
    result = compare(config)
    assert set(result["models"]) == {"densenet121", "baseline_cnn"}
    auc = result["models"]["densenet121"]["auc"]
    assert len(auc["values"]) == 2 and auc["std"] >= 0
    pair = result["pairs"]["densenet121_vs_baseline_cnn"]
    assert 0 <= pair["delong_p"] <= 1 and 0 <= pair["mcnemar_p"] <= 1 and len(pair["delong_p_per_seed"]) == 2
    for name in ("comparison.json", "comparison.md", "roc_all.png"):
        assert (tmp_path / "cmp" / name).exists()
    assert result["runs"]["total"] == 4 and result["runs"]["finished_earlier"] == 0

    again = compare(config)  # a rerun (or a resumed comparison) reuses finished runs and says so
    assert again["runs"]["finished_earlier"] == 4
    assert again["models"]["densenet121"]["auc"]["values"] == auc["values"]


def _tiny_tune(phantom_root, tiny_settings, out, cache, **overrides) -> TuneConfig:
    return TuneConfig(data=str(phantom_root), out=str(out), base_config=str(tiny_settings), weights="none",
                      head_epochs=2, tail_epochs=1, cache_dir=str(cache), **overrides)


def test_ablation_uses_the_full_budget_only_with_a_gpu():
    assert ablation_budget(CompareConfig(), torch.device("cuda")) == (224, 12)
    assert ablation_budget(CompareConfig(), torch.device("cpu")) == (112, 6)
    assert ablation_budget(CompareConfig(ablation_epochs=3), torch.device("cuda")) == (224, 3)


def _reported(ablation: dict) -> dict:
    """An ablation result without the flag that says whether its runs were trained in this call."""
    return {k: {f: x for f, x in v.items() if f != "finished_earlier"} if isinstance(v, dict) else v
            for k, v in ablation.items()}


def _recorded_ablation(config: CompareConfig, records: RunRecords) -> dict:
    """The ablation as bench.compare runs it: each run through the benchmark's records."""
    return ablation_result({init: records(name, settings, partial(train_ablation_run, settings))
                            for init, name, settings in ablation_runs(config)})


def test_tiny_ablation_states_its_budget_and_reuses_finished_runs(phantom_root, tiny_settings, tmp_path):
    config = CompareConfig(data=str(phantom_root), out=str(tmp_path), weights=("densenet121=none",),
                           base_config=str(tiny_settings), ablation_image_size=32, ablation_epochs=1)
    records = RunRecords(tmp_path / "records", "commit abc")
    result = _recorded_ablation(config, records)
    assert set(result) == {"imagenet", "random_init", "budget"}
    assert result["budget"].startswith("end-to-end training of every layer for 1 epochs at 32x32 px on cpu")
    assert 0 <= result["random_init"]["auc"] <= 1 and result["random_init"]["device"] == "cpu"
    log = (tmp_path / "ablation" / "random_init" / "train.log").read_text()
    again = _recorded_ablation(config, records)  # finished runs are reused, not trained again
    assert again["random_init"]["finished_earlier"] and not result["random_init"]["finished_earlier"]
    assert _reported(again) == _reported(result)
    assert (tmp_path / "ablation" / "random_init" / "train.log").read_text() == log
    shutil.rmtree(tmp_path / "ablation")  # the records alone (e.g. from a GPU machine) stand in for the runs
    assert _reported(_recorded_ablation(config, records)) == _reported(result)
    assert not (tmp_path / "ablation").exists()
    table = comparison_markdown({"protocol": {"seeds": 1}, "models": {}, "pairs": {}, "pretraining_ablation": result})
    assert result["budget"] in table and "| random_init | " in table and "| imagenet | " in table


def _summarized_run(seed: int, seconds: float, **marks) -> dict:
    """What run_one gives seed_summary for one seed (metrics 0.8 + seed / 100)."""
    return {"seed": seed, "train_seconds": seconds, "parameters": 10, "inference_ms_per_image": 2.0,
            "threshold": 0.5, "ci95": {k: [0.8, 0.9] for k in METRICS}, **{k: 0.8 + seed / 100 for k in METRICS},
            **marks}


def test_seed_summary_reports_the_cold_cache_seed_as_the_training_time():
    run = _summarized_run
    summary = seed_summary([run(0, 6000.0), run(1, 1600.0), run(2, 1700.0)])  # seeds 1, 2 reused seed 0's cache
    assert summary["train_seconds_per_seed"] == [6000.0, 1600.0, 1700.0] and summary["train_seconds_max"] == 6000.0
    assert summary["auc"]["mean"] == pytest.approx(0.81) and summary["auc"]["std"] == pytest.approx(0.01)
    table = comparison_markdown({"protocol": {"seeds": 3}, "models": {"m": summary}, "pairs": {}})
    assert "| 10 | 6000 | 2.0 |" in table and "slowest seed" in table


def test_a_model_with_fewer_recorded_seeds_says_so_in_its_row_and_its_pairs():
    run = _summarized_run
    models = {"a": seed_summary([run(0, 60.0), run(1, 50.0), run(2, 50.0)]), "b": seed_summary([run(0, 90.0)])}
    pair = {"delong_p": 0.01, "mcnemar_p": 0.02, "mcnemar_p_per_seed": [0.02],
            "significant_seeds_0.05": {"delong": 1, "mcnemar": 1}}
    table = comparison_markdown({"protocol": {"seeds": 3}, "models": models, "pairs": {"a_vs_b": pair}})
    assert "the seeds column says how many seeds" in table
    assert "| a | 3 | 0.8100 ± 0.0100" in table and "| b | 1 | 0.8000 ± 0.0000" in table
    assert "| a vs b | 0.01 (1/1) | 0.02 (1/1) |" in table


def test_ablation_budget_is_read_from_the_run_not_from_this_machine(tmp_path):
    metrics = {"device": "cuda (NVIDIA H100 80GB HBM3)", "threshold": 0.4, "timings": {"total_seconds": 300.0},
               "test": {"at_threshold": {k: 0.9 for k in ("auc", "accuracy", "sensitivity", "specificity", "f1",
                                                          "average_precision")}}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "config.json").write_text(json.dumps({"full": {"epochs": 12}, "image_size": 224}))
    summary = ablation_run_summary(tmp_path)
    assert summary["budget"] == "end-to-end training of every layer for 12 epochs at 224x224 px on " \
                                "cuda (NVIDIA H100 80GB HBM3)"
    assert summary["train_seconds"] == 300.0 and summary["accuracy"] == 0.9


def test_three_trial_study_writes_a_usable_best_config(phantom_root, tiny_settings, tmp_path):
    summary = tune(_tiny_tune(phantom_root, tiny_settings, tmp_path / "study", tmp_path / "cache", trials=3))
    assert summary["n_trials"] == 3 and 0 < summary["val_auc"] <= 1
    best = load_settings(TrainConfig, file=summary["best_config"])  # train --config accepts it
    assert best.head.lr == pytest.approx(summary["best_params"]["head_lr"])
    assert (tmp_path / "study" / "optimization_history.png").exists()
    table = (tmp_path / "study" / "trials.csv").read_text().splitlines()
    assert table[0].startswith("number,state,value,seconds,") and "head_lr" in table[0] and len(table) == 4

    resumed = tune(_tiny_tune(phantom_root, tiny_settings, tmp_path / "study", tmp_path / "cache", trials=5))
    assert resumed["n_trials"] == 5  # the stored study continued from 3, it did not start over
    numbers = [t.number for t in open_study(_tiny_tune(phantom_root, tiny_settings, tmp_path / "study",
                                                       tmp_path / "cache")).trials]
    assert numbers == list(range(5))
    head_lrs = {t.params["head_lr"] for t in open_study(_tiny_tune(phantom_root, tiny_settings, tmp_path / "study",
                                                                    tmp_path / "cache")).trials}
    assert len(head_lrs) == 5  # the resumed study drew new settings, it did not replay its first trials


def test_parallel_workers_draw_different_settings(tmp_path):
    config = TuneConfig(out=str(tmp_path))
    studies = [open_study(config, worker) for worker in (0, 1)]  # both open the empty study, as spawned workers do
    trials = [study.ask() for study in studies]
    draws = [trial.suggest_float("head_lr", 1e-4, 1e-2, log=True) for trial in trials]
    assert trials[0].number != trials[1].number and draws[0] != draws[1]


def test_two_workers_share_one_study(phantom_root, tiny_settings, tmp_path):
    config = _tiny_tune(phantom_root, tiny_settings, tmp_path / "shared", tmp_path / "cache", trials=4, workers=2)
    summary = tune(config)
    trials = open_study(config).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert summary["n_trials"] >= 4 and len(numbers) == len(set(numbers))
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len({t.params["head_lr"] for t in finished}) == len(finished)  # no trial was run twice
    assert multiprocessing.active_children() == []


def test_two_workers_share_one_study_in_postgresql(phantom_root, tiny_settings, tmp_path, postgres_url):
    config = _tiny_tune(phantom_root, tiny_settings, tmp_path / "pg", tmp_path / "cache", trials=4, workers=2,
                        storage=postgres_url)
    summary = tune(config)
    assert summary["storage"].startswith("postgresql") and summary["n_trials"] == 4
    trials = open_study(config).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # every trial number once: none lost, none twice
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len({t.params["head_lr"] for t in finished}) == len(finished)
    best = load_settings(TrainConfig, file=summary["best_config"])  # train --config takes the best settings
    assert best.head.lr == pytest.approx(summary["best_params"]["head_lr"])

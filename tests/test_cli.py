"""Tests of the command line: help texts, clear errors without tracebacks, predict/evaluate/explain runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.cli import COMMANDS, main


def test_every_command_has_useful_help(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert len(capsys.readouterr().out) > 200, command


def test_train_prints_the_merged_settings_without_training(tmp_path, capsys):
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"head_hidden": 512, "tail": {"epochs": 7}}))
    assert main(["train", "--config", str(config), "--model", "resnet50", "--set", "tail.epochs=3",
                 "cache_engine=torch", "--out", str(tmp_path / "run"), "--print-settings"]) == 0
    settings = json.loads(capsys.readouterr().out)
    assert (settings["head_hidden"], settings["tail"]["epochs"], settings["model"]) == (512, 3, "resnet50")
    assert settings["cache_engine"] == "torch" and settings["stages"] == ["head", "tail"]  # "auto" resolved
    assert not (tmp_path / "run").exists()


def test_train_defaults_to_the_best_validated_recipe_of_each_model(capsys):
    from pneumoscan.settings import load_settings, to_dict
    from pneumoscan.train import TrainConfig

    assert main(["train", "--model", "densenet121", "--print-settings"]) == 0
    settings = json.loads(capsys.readouterr().out)
    tuned_file = Path(__file__).resolve().parents[1] / "bench" / "configs" / "densenet121_tuned.json"
    tuned = to_dict(load_settings(TrainConfig, file=tuned_file).resolved())
    assert settings["recipe"] == "densenet121-tuned"
    differs = {k for k in settings if settings[k] != tuned[k]}
    assert differs == {"recipe", "pos_weight", "pos_weight_scale"}  # the class weight now follows the data
    assert settings["pos_weight_scale"] * 1150 / 3321 == pytest.approx(tuned["pos_weight"], rel=1e-12)
    assert main(["train", "--model", "resnet50", "--print-settings"]) == 0
    assert json.loads(capsys.readouterr().out)["recipe"] == "published"
    assert main(["train", "--model", "densenet121", "--recipe", "end-to-end", "--print-settings"]) == 0
    assert json.loads(capsys.readouterr().out)["stages"] == ["full"]


def test_the_brain_mri_recipe_is_the_recorded_studys_best_trial(capsys):
    from pneumoscan.settings import to_dict
    from pneumoscan.studies.tune import AUGMENTATION_LEVELS
    from pneumoscan.train import TrainConfig

    study = Path(__file__).resolve().parents[1] / "bench" / "results" / "brain_mri_tune.json"
    best = json.loads(study.read_text())["best_params"]
    assert main(["train", "--model", "densenet121", "--recipe", "densenet121-brain-mri", "--print-settings"]) == 0
    settings = json.loads(capsys.readouterr().out)
    for key in ("head_hidden", "dropout_in", "dropout_hidden", "weight_decay", "label_smoothing"):
        assert settings[key] == pytest.approx(best[key]), key
    for stage in ("head", "tail"):
        assert settings[stage]["lr"] == pytest.approx(best[f"{stage}_lr"])
        assert settings[stage]["lr_min"] == pytest.approx(best[f"{stage}_lr"] / 10)  # as the study's trials decayed
    assert settings["tail"]["fraction"] == pytest.approx(best["tail_fraction"])
    level = to_dict(TrainConfig(augmentation=AUGMENTATION_LEVELS[best["augmentation"]]))["augmentation"]
    assert settings["augmentation"] == level and settings["recipe"] == "densenet121-brain-mri"


def test_train_help_names_every_recipe(capsys, monkeypatch):
    from pneumoscan.train.recipes import RECIPES

    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at hyphens too; one line per option keeps names whole
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for name in RECIPES:
        assert name in help_text, name


def test_bad_input_is_a_message_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pneumoscan.cli", "train", "--data", str(tmp_path / "nowhere"),
                             "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "pneumoscan.cli", "train", "--data", str(tmp_path),
                             "--set", "epochs=3"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown setting" in result.stderr


def test_predict_folder_with_a_broken_file(tiny_run, phantom_root, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for source in sorted((phantom_root / "test" / "NORMAL").iterdir())[:3]:
        (folder / source.name).write_bytes(source.read_bytes())
    (folder / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(tiny_run), str(folder), "--out", str(out)]) == 1  # one file failed
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4
    broken = [r for r in rows if r["status"] == "unreadable"]
    assert len(broken) == 1 and broken[0]["path"].endswith("broken.jpeg") and broken[0]["probability"] == ""
    assert "corrupt or truncated" in broken[0]["reason"]
    assert all(r["label"] in ("NORMAL", "PNEUMONIA") for r in rows if r["status"] == "scored")


def test_evaluate_on_a_label_csv(tiny_run, phantom_root, tmp_path, capsys):
    from pneumoscan.data import scan_kaggle_split

    samples = scan_kaggle_split(phantom_root, "test")
    listing = tmp_path / "labels.csv"
    listing.write_text("path,label\n" + "".join(f"{s.path},{s.label}\n" for s in samples))
    assert main(["evaluate", str(tiny_run), "--data", str(listing), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics_labels.json").read_text())
    counts = metrics["screening"]
    assert counts["images"] == len(samples) == metrics["at_threshold"]["n"] + counts["refused"] + counts["unreadable"]
    assert "AUC" in capsys.readouterr().out


def test_explain_and_review(tiny_run, phantom_root, tmp_path):
    image = next((phantom_root / "test" / "PNEUMONIA").iterdir())
    assert main(["explain", str(image), "--model", str(tiny_run), "--out", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / f"{image.stem}.png").exists()
    assert main(["explain", "--model", str(tiny_run), "--review", "test", "--data", str(phantom_root),
                 "--out", str(tmp_path / "review"), "--confident", "2"]) == 0
    assert (tmp_path / "review" / "index.html").exists()


def test_export_with_an_openvino_int8_model(tiny_run, tmp_path, capsys):
    from pneumoscan.inference.runtime import load_runtime
    from pneumoscan.serve.app import load_model_card

    out = tmp_path / "export"
    assert main(["export", str(tiny_run), "--out", str(out), "--parity-images", "4", "--openvino-int8", "16"]) == 0
    assert "OpenVINO int8 model" in capsys.readouterr().out
    card = json.loads((out / "model.card.json").read_text())
    assert card["openvino_int8"]["calibration_images"] == 16
    assert {"model.int8.xml", "model.int8.bin"} <= set(card["files"])
    assert load_model_card(out / "model.int8.xml") == card  # what serve shows at /v1/model
    runtime = load_runtime(out / "model.int8.xml")
    outputs = runtime.run(np.zeros((2, 3, 64, 64), dtype=np.float32))
    assert runtime.runtime == "openvino" and outputs["probabilities"].shape == (2, 2)


def test_run_summary_names_the_threshold_and_its_interval(tiny_run, capsys):
    from pneumoscan.cli import _print_summary

    _print_summary(tiny_run)
    out = capsys.readouterr().out
    assert "chosen on validation; 95% interval over validation patients" in out
    assert "test: AUC" in out


def test_cache_reports_its_size_and_clears_only_activation_caches(tmp_path, monkeypatch, capsys):
    (tmp_path / "activations-abc").mkdir()
    (tmp_path / "activations-abc" / "activations.npy").write_bytes(b"x" * 2500)
    (tmp_path / "notes.txt").write_text("kept")
    monkeypatch.setenv("PNEUMOSCAN_CACHE", str(tmp_path))
    assert main(["cache"]) == 0
    assert f"{tmp_path}: 2.5 kB in 1 activation caches" in capsys.readouterr().out
    assert main(["cache", "--clear"]) == 0
    assert "freed 2.5 kB" in capsys.readouterr().out
    assert not (tmp_path / "activations-abc").exists() and (tmp_path / "notes.txt").exists()


def test_the_cache_folder_follows_pneumoscan_cache(tmp_path, monkeypatch):
    from pneumoscan.train import TrainConfig

    monkeypatch.setenv("PNEUMOSCAN_CACHE", str(tmp_path / "elsewhere"))
    assert TrainConfig().resolved().cache_dir == str(tmp_path / "elsewhere")
    assert TrainConfig(cache_dir="given").resolved().cache_dir == "given"


def _first_hour_cases(run, image):
    """(argv, words the one error line must hold): the mistakes a new user meets first."""
    return [
        (["train", "--data", str(image.parent), "--set", "full.epochs=abc", "--print-settings"],
         "setting full.epochs='abc': expected a whole number"),
        (["train", "--data", str(image.parent), "--model", "baseline_cnn", "--set", "tail.epochs=abc",
          "--print-settings"], "setting tail.epochs='abc': expected a whole number"),
        (["train", "--data", str(image.parent), "--set", "augmentation.hflip=maybe", "--print-settings"],
         "setting augmentation.hflip='maybe': expected true or false"),
        (["train", "--data", str(image.parent), "--set", "augmentation.crop_scale=[0.5]", "--print-settings"],
         "expected a list of 2 numbers"),
        (["predict", str(image), str(run)], f"{image}: not a pneumoscan model"),
        (["evaluate", str(image), "--data", str(image.parent)], f"{image}: not a pneumoscan model"),
    ]


def test_first_hour_mistakes_end_in_one_line_and_exit_2(tiny_run, phantom_root, capsys):
    image = next((phantom_root / "test" / "NORMAL").iterdir())
    for argv, words in _first_hour_cases(tiny_run, image):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in captured.err, (argv, captured.err)


def test_a_missing_weights_download_names_the_file_and_the_flag(phantom_root, tmp_path, monkeypatch, capsys):
    from urllib.error import URLError

    from torchvision.models import WeightsEnum

    def offline(self, *args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    assert main(["train", "--data", str(phantom_root), "--out", str(tmp_path / "run"), "--set", "image_size=64",
                 f"cache_dir={tmp_path / 'cache'}"]) == 2
    err = capsys.readouterr().err
    error = [line for line in err.splitlines() if "error:" in line]  # the rest is the progress bars
    assert len(error) == 1 and "densenet121-a639ec97.pth" in error[0] and "--weights FILE" in error[0]
    assert "Traceback" not in err


def test_each_model_command_runs_with_one_frozen_settings_dataclass():
    import dataclasses

    from pneumoscan.cli.parsers import build_parser
    from pneumoscan.cli.settings import (
        EvaluateSettings,
        ExplainSettings,
        ExportSettings,
        PredictSettings,
        ServeSettings,
        command_settings,
    )

    parser = build_parser()
    cases = {EvaluateSettings: ["evaluate", "run", "--data", "d"], PredictSettings: ["predict", "run", "a.png", "b/"],
             ExplainSettings: ["explain", "a.png", "--model", "run", "--out", "o"],
             ExportSettings: ["export", "run", "--out", "o"], ServeSettings: ["serve", "run"]}
    for cls, argv in cases.items():
        args = parser.parse_args(argv)
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(vars(args)) - {"command", "verbose", "quiet"} <= fields, cls  # no option is left unread
        settings = command_settings(cls, args)
        assert settings.model == "run"
        with pytest.raises(dataclasses.FrozenInstanceError):
            settings.model = "other"
    assert command_settings(PredictSettings, parser.parse_args(cases[PredictSettings])).inputs == ("a.png", "b/")
    with pytest.raises(ValueError, match="format='zip'"):
        ExportSettings(format="zip")
    with pytest.raises(ValueError, match="runtime='tensorrt'"):
        ServeSettings(runtime="tensorrt")

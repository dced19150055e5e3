"""Tests of pneumoscan.settings: settings files, overrides, unknown keys."""

from __future__ import annotations

import json

import pytest

from pneumoscan.settings import load_settings, parse_overrides, to_dict
from pneumoscan.train import TrainConfig


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "resnet50", "tail_epochs": 3, "augmentation": {"hflip": False}}))
    overrides = parse_overrides(["tail_epochs=5", "augmentation.gamma=[0.9,1.1]"])
    config = load_settings(TrainConfig, file=path, overrides=overrides)
    assert (config.model, config.tail_epochs) == ("resnet50", 5)
    assert config.augmentation.hflip is False and config.augmentation.gamma == (0.9, 1.1)
    assert config.augmentation.rotation_deg == TrainConfig().augmentation.rotation_deg


def test_unknown_keys_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="unknown setting.*tail_epoch.*valid:.*tail_epochs"):
        load_settings(TrainConfig, overrides={"tail_epoch": 3})
    with pytest.raises(ValueError, match="augmentation.flip"):
        load_settings(TrainConfig, overrides={"augmentation": {"flip": True}})


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="model='vgg'"):
        TrainConfig(model="vgg")
    with pytest.raises(ValueError, match="threshold_rule"):
        TrainConfig(threshold_rule="magic")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["tail_epochs"])


def test_resolved_settings_round_trip_as_json():
    config = TrainConfig(model="baseline_cnn").resolved()
    assert config.stages == ("full",) and config.weights == "none"
    assert load_settings(TrainConfig, overrides=to_dict(config)) == config
    assert TrainConfig().resolved().stages == ("head", "tail")


def test_a_list_of_names_can_be_written_with_commas():
    assert load_settings(TrainConfig, overrides=parse_overrides(["stages=full"])).stages == ("full",)
    assert load_settings(TrainConfig, overrides=parse_overrides(["stages=head, tail"])).stages == ("head", "tail")
    with pytest.raises(ValueError, match="unknown"):
        load_settings(TrainConfig, overrides=parse_overrides(["stages=heads"]))

"""Tests of pneumoscan.settings: settings files, overrides, unknown keys."""

from __future__ import annotations

import json

import pytest

from pneumoscan.settings import load_settings, parse_overrides, to_dict
from pneumoscan.train import TrainConfig


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "resnet50", "tail": {"epochs": 3}, "augmentation": {"hflip": False}}))
    overrides = parse_overrides(["tail.epochs=5", "augmentation.gamma=[0.9,1.1]"])
    config = load_settings(TrainConfig, file=path, overrides=overrides)
    assert (config.model, config.tail.epochs, config.tail.lr) == ("resnet50", 5, 1e-4)  # tail's other defaults stay
    assert config.augmentation.hflip is False and config.augmentation.gamma == (0.9, 1.1)
    assert config.augmentation.rotation_deg == TrainConfig().augmentation.rotation_deg


def test_unknown_keys_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="unknown setting.*tail_epoch.*valid:.*tail"):
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


@pytest.mark.parametrize("pair, words", [
    ("full.epochs=abc", "setting full.epochs='abc': expected a whole number, e.g. full.epochs=10"),
    ("full.epochs=2.5", "setting full.epochs=2.5: expected a whole number"),
    ("head.lr=fast", "setting head.lr='fast': expected a number"),
    ("augmentation.hflip=maybe", "setting augmentation.hflip='maybe': expected true or false"),
    ("augmentation.crop_scale=[0.5]", "setting augmentation.crop_scale=[0.5]: expected a list of 2 numbers"),
    ("augmentation.crop_scale=[0.5, \"x\"]", "setting augmentation.crop_scale[1]='x': expected a number"),
    ("input_checks.accept=3", "setting input_checks.accept=3: expected a list of strings"),
    ("model=7", "setting model=7: expected a string"),
])
def test_settings_are_checked_against_their_types(pair, words):
    with pytest.raises(ValueError) as error:
        load_settings(TrainConfig, overrides=parse_overrides([pair]))
    assert words in str(error.value)


def test_typed_settings_take_whole_numbers_for_floats_and_lists_for_tuples():
    config = load_settings(TrainConfig, overrides=parse_overrides(["head.lr=1", "augmentation.gamma=[1, 2]",
                                                                   "input_checks.accept=[\"a\", \"b\"]"]))
    assert config.head.lr == 1.0 and isinstance(config.head.lr, float)
    assert config.augmentation.gamma == (1.0, 2.0) and config.input_checks.accept == ("a", "b")

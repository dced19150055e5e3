"""Tests of pneumoscan.input_checks.checks and data.not_xray: rules, the gate, the shift score, their round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumoscan.data.io import colourfulness, read_image
from pneumoscan.input_checks.checks import (
    FLAG_ABOVE,
    InputChecks,
    InputCheckSettings,
    is_blank,
    rule_refusal,
)
from pneumoscan.input_checks.fitting import (
    fit_gate,
    fit_logistic,
    fit_population_shift,
    fit_shift,
    held_out_fold_probabilities,
    other_population_limit,
    pooled_features,
)
from pneumoscan.input_checks.not_xray import KINDS, PHOTOS_FIT, PHOTOS_HELD_OUT, colour_images, made_images
from pneumoscan.models.checkpoint import load_model


def test_made_images_cover_every_kind_and_depend_on_the_seed():
    first, again, other = made_images(3, seed=0, size=64), made_images(3, seed=0, size=64), made_images(3, seed=1,
                                                                                                        size=64)
    assert set(first) == set(KINDS)
    for kind in KINDS:
        assert len(first[kind]) == 3 and all(im.shape == (64, 64) and im.dtype == np.float32 for im in first[kind])
        assert all(0 <= im.min() and im.max() <= 1 for im in first[kind])
        np.testing.assert_array_equal(first[kind][0], again[kind][0])
        assert not np.array_equal(first[kind][0], other[kind][0]), kind
    assert not set(PHOTOS_FIT) & set(PHOTOS_HELD_OUT)


def test_rules_refuse_blank_and_colour_but_not_grey_files():
    grey = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    assert is_blank(np.full((32, 32), 0.5)) and not is_blank(grey)
    assert "blank" in rule_refusal(np.zeros((8, 8)), 0.0, "chest X-ray")
    assert rule_refusal(grey, 0.0, "chest X-ray") == ""
    assert "not a brain MRI" in rule_refusal(grey, 50.0, "brain MRI")
    assert colourfulness(np.repeat((grey[..., None] * 255).astype(np.uint8), 3, 2)) == 0.0
    assert all(colourfulness(image) > 12 for image in colour_images(20, seed=0))


def test_read_image_reports_colour_only_for_colour_files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    Image.fromarray(np.repeat(grey[..., None], 3, 2)).save(tmp_path / "grey_rgb.png")
    Image.fromarray(colour_images(1, seed=3)[0]).save(tmp_path / "colour.png")
    assert read_image(tmp_path / "grey_rgb.png")[1] == 0.0
    assert read_image(tmp_path / "colour.png")[1] > 12


def test_gate_separates_and_its_folded_scaling_matches_sklearn():
    rng = np.random.default_rng(0)
    positive, negative = rng.normal(2, 1, (200, 8)) * [1, 10, 1, 1, 1, 1, 1, 100], rng.normal(0, 1, (150, 8))
    gate = fit_gate(positive, negative)
    assert (gate.probability(positive) >= 0.5).mean() > 0.95 and (gate.probability(negative) < 0.5).mean() > 0.95


def test_shift_flags_about_one_minus_quantile_of_similar_images():
    rng = np.random.default_rng(0)
    shift = fit_shift(rng.normal(0, 1, (2000, 16)), rng.normal(0, 1, (1000, 16)), quantile=0.95)
    assert (shift.score(rng.normal(0, 1, (4000, 16))) > FLAG_ABOVE).mean() == pytest.approx(0.05, abs=0.02)
    assert (shift.score(rng.normal(3, 1, (100, 16))) > FLAG_ABOVE).all()


def test_novelty_in_the_largest_principal_directions_ignores_a_shift_along_a_faint_one():
    rng = np.random.default_rng(0)
    scales = np.r_[np.full(4, 5.0), np.full(12, 0.1)]  # 4 strong directions, 12 faint ones
    train, val = rng.normal(0, 1, (2000, 16)) * scales, rng.normal(0, 1, (1000, 16)) * scales
    faint_shift = rng.normal(0, 1, (200, 16)) * scales + np.r_[np.zeros(4), np.full(12, 0.3)]
    strong_shift = rng.normal(0, 1, (200, 16)) * scales + np.r_[np.full(4, 15.0), np.zeros(12)]
    full, top = (fit_shift(train, val, quantile=0.99, components=k) for k in (None, 4))
    flagged = lambda shift, x: float((shift.score(x) > FLAG_ABOVE).mean())  # noqa: E731
    assert flagged(full, faint_shift) > 0.9 and flagged(top, faint_shift) < 0.05
    assert flagged(top, strong_shift) > 0.9
    # the mean of 4 squared z-scores: the median of chi-squared with 4 degrees of freedom (3.357), over 4
    assert np.median(top.novelty(train)) == pytest.approx(3.357 / 4, abs=0.05)


def test_examples_of_another_population_train_a_classifier_that_flags_them_and_not_resampled_copies():
    rng = np.random.default_rng(0)
    train, val = rng.normal(0, 1, (600, 8)), rng.normal(0, 1, (300, 8))
    # resampled copies move along the first axis; the other population sits along the second, closer than copies
    copies = rng.normal(0, 1, (600, 8)) + [2.5, 0, 0, 0, 0, 0, 0, 0]
    other = rng.normal(0, 1, (200, 8)) + [0, 4.0, 0, 0, 0, 0, 0, 0]
    resampled = {"train": (copies[:300], copies[:300]), "val": (copies[300:], copies[300:])}

    class Trunkless:  # shift_layer_of reads the trunk's parameters: none, so the last features are used
        trunk = torch.nn.Identity()

    settings = InputCheckSettings()
    novelty_only = fit_population_shift(Trunkless(), (train, val), (train, val), resampled, None, settings)
    with_examples = fit_population_shift(Trunkless(), (train, val), (train, val), resampled, other[:100], settings)
    assert novelty_only.weight is None and with_examples.weight is not None
    held_out, new_copies = other[100:], rng.normal(0, 1, (300, 8)) + [2.5, 0, 0, 0, 0, 0, 0, 0]
    flagged = lambda shift, x: float((shift.score(x, x) > FLAG_ABOVE).mean())  # noqa: E731
    assert flagged(with_examples, held_out) > 0.9 > flagged(novelty_only, held_out)
    assert flagged(with_examples, new_copies) < 0.05 and flagged(with_examples, rng.normal(0, 1, (500, 8))) < 0.05


def test_the_other_population_limit_flags_nearly_every_unseen_example_and_nothing_the_classifier_half_doubts():
    rng = np.random.default_rng(1)
    training, other = rng.normal(0, 1, (800, 8)), rng.normal(0, 1, (300, 8)) + [0, 8.0, 0, 0, 0, 0, 0, 0]
    held_out = held_out_fold_probabilities(other, training, c=0.01)
    assert held_out.shape == (300,) and (held_out > 0.5).mean() > 0.95
    weight, bias = fit_logistic(other, training, c=0.01)
    shift = fit_shift(training, training)
    shift.threshold = float("inf")  # novelty never flags: the classifier alone decides here
    shift.weight, shift.bias = weight, bias
    shift.population_limit = other_population_limit(held_out)
    assert shift.population_limit > 0.55  # above the 0.5 floor: unseen examples sit higher
    between = np.linspace(-3, 8, 2000)[:, None] * np.eye(8)[1]  # points along the other population's axis
    probability = shift.other_population(between)
    doubted = (probability > 0.5) & (probability < shift.population_limit)
    assert doubted.any() and not (shift.score(between, between)[doubted] > FLAG_ABOVE).any()
    again = InputChecks.from_state(InputChecks(shift=shift, gate=None).to_state())
    assert again.shift.population_limit == pytest.approx(shift.population_limit)


def test_checks_survive_the_checkpoint_and_refuse_held_out_made_images(tiny_run):
    loaded = load_model(tiny_run)
    checks = loaded.checks
    assert isinstance(checks, InputChecks) and checks.gate is not None
    again = InputChecks.from_state(checks.to_state())
    torch.testing.assert_close(again.gate.weight, checks.gate.weight)
    held_out = made_images(10, seed=12345, photos=PHOTOS_HELD_OUT, size=64)
    refused = {kind: float((checks.gate.probability(pooled_features(loaded.model, grays)) < 0.5).mean())
               for kind, grays in held_out.items()}
    assert min(refused.values()) >= 0.9, refused


def test_refit_with_examples_to_refuse(tiny_run, tmp_path, capsys):
    import json
    import shutil

    from PIL import Image

    from pneumoscan.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    refuse = tmp_path / "others"
    refuse.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):  # a made "other modality": bright rings on black
        y, x = np.mgrid[-1:1:64j, -1:1:64j]
        ring = np.exp(-((np.hypot(x, y) - rng.uniform(0.3, 0.8)) ** 2) / 0.01)
        Image.fromarray((ring * 255).astype(np.uint8)).save(refuse / f"ring{i}.png")
    assert main(["checks", str(run), "--refuse", str(refuse), "--set", "examples_per_source=10"]) == 0
    report = json.loads((run / "input_checks.json").read_text())
    assert report["fitted_on"]["refuse"] == {str(refuse): 10} and report["settings"]["examples_per_source"] == 10
    assert load_model(run).description.input_checks["fitted_on"]["refuse"] == {str(refuse): 10}
    assert load_model(run).threshold == load_model(tiny_run).threshold

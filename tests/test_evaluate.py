"""Tests of pneumoscan.evaluate: metrics against scikit-learn, thresholds, intervals, plots."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from pneumoscan.evaluate import binary_metrics, bootstrap_ci, choose_threshold, evaluate_split, threshold_interval


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    prob = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.2, 400), 0, 1)
    return y, prob


def test_metrics_agree_with_scikit_learn(scores):
    y, prob = scores
    m = binary_metrics(y, prob, 0.6)
    pred = prob >= 0.6
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, ~pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["auc"] == pytest.approx(roc_auc_score(y, prob))
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    assert tn + fp + fn + tp == 400 and tp == int(np.sum(pred & (y == 1)))
    assert m["classification_report"]["PNEUMONIA"]["recall"] == pytest.approx(m["sensitivity"])


def test_youden_threshold_sits_mid_gap_in_logit_space():
    y = np.array([0, 0, 0, 1, 1, 1])
    prob = np.array([0.01, 0.05, 0.1, 0.9, 0.95, 0.99])
    t = choose_threshold(y, prob, rule="youden")
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert logit(t) == pytest.approx((logit(0.1) + logit(0.9)) / 2)


def test_sensitivity_rule_reaches_its_target(scores):
    y, prob = scores
    t = choose_threshold(y, prob, rule="sensitivity", target_sensitivity=0.95)
    assert binary_metrics(y, prob, t)["sensitivity"] >= 0.95
    assert binary_metrics(y, prob, t + 0.02)["sensitivity"] < 0.95 or t > 0.98


def test_youden_maximises_j(scores):
    y, prob = scores
    t = choose_threshold(y, prob)
    j = lambda t: binary_metrics(y, prob, t)["sensitivity"] + binary_metrics(y, prob, t)["specificity"]  # noqa: E731
    assert all(j(t) >= j(other) - 1e-12 for other in np.linspace(0.05, 0.95, 91))


def test_threshold_interval_narrows_with_more_patients_and_keeps_patients_together():
    rng = np.random.default_rng(0)

    def clustered(patients, images_each):
        """Scores that are the same for every image of a patient (one label per patient)."""
        y = np.repeat(rng.integers(0, 2, patients), images_each)
        score = np.repeat(rng.normal(size=patients), images_each) + (y - 0.5) * 2
        return y, 1 / (1 + np.exp(-score)), np.repeat(np.arange(patients), images_each)

    y, prob, patients = clustered(100, 3)
    few = threshold_interval(y, prob, patients, n_boot=300, seed=1)
    assert few[0] <= choose_threshold(y, prob) <= few[1]
    assert threshold_interval(y, prob, patients, n_boot=300, seed=1) == few  # seeded
    many = threshold_interval(*clustered(3000, 3), n_boot=300, seed=1)
    assert many[1] - many[0] < (few[1] - few[0]) / 2
    # resampling images as if each were its own patient understates the spread of clustered data
    by_image = threshold_interval(y, prob, np.arange(len(y)), n_boot=300, seed=1)
    assert by_image[1] - by_image[0] < few[1] - few[0]


def test_threshold_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(np.ones(5), np.linspace(0, 1, 5))


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded(scores):
    y, prob = scores
    ci = bootstrap_ci(y, prob, 0.5, n_boot=300, seed=1)
    point = binary_metrics(y, prob, 0.5)
    for name in ("accuracy", "sensitivity", "specificity", "auc"):
        assert ci[name][0] <= point[name] <= ci[name][1]
        assert ci[name][1] - ci[name][0] < 0.15
    assert ci == bootstrap_ci(y, prob, 0.5, n_boot=300, seed=1)


def test_evaluate_split_writes_plots(scores, tmp_path):
    y, prob = scores
    result = evaluate_split(y, prob, threshold=0.55, name="unit", out_dir=tmp_path, n_boot=50)
    assert result["at_0.5"]["threshold"] == 0.5 and "ci95" in result["at_threshold"]
    for name in result["plots"]:
        assert (tmp_path / name).stat().st_size > 1000


def test_a_two_class_task_of_other_names_reports_under_its_own_names(scores, tmp_path):
    y, prob = scores
    result = evaluate_split(y, prob, threshold=0.5, name="unit", out_dir=tmp_path, n_boot=20,
                            names=("no tumour", "tumour"))
    report = result["at_threshold"]["classification_report"]
    assert {"no tumour", "tumour"} <= set(report) and "PNEUMONIA" not in report
    assert report["tumour"]["recall"] == pytest.approx(result["at_threshold"]["sensitivity"])


def test_robustness_report_summarises_every_shift():
    from pneumoscan.evaluate.robustness import robustness_report

    y = np.array([0, 0, 1, 1])
    logits = np.array([[-3.0, 1.0], [-2.0, -1.0], [2.0, 0.5], [3.0, 2.0]])
    report = robustness_report(y, logits, 0.5, ("a", "b"))
    assert report["shifts"]["a"]["specificity"] == 1.0 and report["shifts"]["b"]["specificity"] == 0.5
    assert report["worst_specificity"] == 0.5 and report["mean_auc"] == pytest.approx((1.0 + 0.75) / 2)


def test_predictions_table_round_trips(tmp_path):
    from pneumoscan.evaluate.report import read_predictions, write_predictions

    write_predictions(tmp_path / "p.csv", ["a.png", "b.png"], [0, 1], np.array([0.25, 0.875]), 0.5)
    paths, labels, prob = read_predictions(tmp_path / "p.csv")
    assert paths == ["a.png", "b.png"] and labels.tolist() == [0, 1] and prob.tolist() == [0.25, 0.875]


def test_predictions_table_keeps_the_order_of_confident_predictions(tmp_path):
    from pneumoscan.evaluate.report import read_predictions, write_predictions
    from pneumoscan.inference.predict import sigmoid

    prob = sigmoid(np.array([15.0, 16.0, 17.0, 30.0]))  # all within 1e-6 of 1
    write_predictions(tmp_path / "p.csv", list("abcd"), [1, 1, 1, 1], prob, 0.5)
    assert read_predictions(tmp_path / "p.csv")[2].tolist() == prob.tolist()


def test_selection_summary_pools_clean_and_shifted_validation():
    from pneumoscan.evaluate.robustness import pool_with_shifts, selection_summary

    y = np.array([0, 0, 1, 1])
    clean = np.array([0.1, 0.2, 0.8, 0.9])
    shifted = np.array([[0.1, 0.6], [0.2, 0.7], [0.8, 0.9], [0.9, 0.95]])  # second shift: every normal called
    fit_y, fit_p = pool_with_shifts(y, clean, y, shifted)
    assert fit_y.tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1] and len(fit_p) == 12
    summary = selection_summary(y, clean, y, shifted, 0.5)
    assert summary["worst_specificity"] == 0.0 and summary["worst_balanced_accuracy"] == 0.5
    assert summary["mean_balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)

"""Tests of pneumoscan.demo: the whole job on phantoms ends in a report.html that a real browser shows."""

from __future__ import annotations

import json

import pytest
from tests.conftest import LIGHT_CHECKS, launch_chromium, needs_chromium

from pneumoscan.demo import DemoConfig, choose_gallery, run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, run_demo(DemoConfig(out=str(out), n_train=96, n_test=32, size=64, epochs=3))


def test_demo_measures_the_heatmaps_against_the_lesions(demo):
    out, summary = demo
    lesions = summary["lesions"]
    assert lesions["lesion_phantoms"] > 0 and 0 <= lesions["hit_rate"] <= 1
    assert 0 <= lesions["hits"] <= lesions["lesion_phantoms"]
    assert all((g["hit"] is None) == (g["label"] == "NORMAL") for g in summary["gallery"])
    assert "test" in summary["metrics"] and (out / "run" / "model.pt").exists()


def test_the_report_shows_both_classes_errors_first_and_says_real_films_are_refused(demo):
    out, summary = demo
    errors = [g["error"] for g in summary["gallery"]]
    assert errors == sorted(errors, reverse=True)  # the gallery starts with the errors
    assert {g["label"] for g in summary["gallery"]} == {"NORMAL", "PNEUMONIA"}
    page = (out / "report.html").read_text()
    assert "it refuses real chest X-rays by design" in page and "make demo DATA=ROOT" in page
    assert page.count("true NORMAL") >= 1 and page.count("true PNEUMONIA") >= 1


def test_the_gallery_takes_the_errors_then_each_class_in_turn():
    paths = ["n1", "n2", "n3", "p1", "p2", "p3"]
    labels, probabilities = [0, 0, 0, 1, 1, 1], [0.1, 0.3, 0.9, 0.95, 0.7, 0.2]
    called = [int(p >= 0.5) for p in probabilities]
    assert choose_gallery(paths, labels, called, probabilities, 0.5, 5) == ["n3", "p3", "n1", "p1", "n2"]


@needs_chromium
def test_report_opens_in_a_browser_with_metrics_and_heatmaps(demo):
    sync_api = pytest.importorskip("playwright.sync_api")
    out, _ = demo
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright, "--allow-file-access-from-files")
        page = browser.new_page()
        page.goto((out / "report.html").as_uri())
        assert "test" in page.inner_text("#metrics") and "AUC" in page.inner_text("#metrics")
        assert "Lesion hit rate" in page.inner_text("#lesions")
        loaded = page.eval_on_selector_all(".gallery img", "images => images.filter(i => i.naturalWidth > 0).length")
        plots = page.eval_on_selector_all("figure img", "images => images.filter(i => i.naturalWidth > 0).length")
        browser.close()
    assert loaded >= 1 and plots >= loaded + 3


def test_the_demo_on_a_labelled_folder_trains_the_quick_recipe_and_reports_real_films(phantom_root, tmp_path,
                                                                                     monkeypatch):
    from pneumoscan import demo as demo_module
    from pneumoscan.train.recipes import recipe_settings

    monkeypatch.setenv("PNEUMOSCAN_CACHE", str(tmp_path / "cache"))  # the user's cache, here a test's
    monkeypatch.setattr(demo_module, "recipe_settings", lambda name: {  # the quick recipe at the phantoms' size
        **recipe_settings(name), "image_size": 64, "n_boot": 50, "input_checks": LIGHT_CHECKS})
    out = tmp_path / "demo-real"
    summary = run_demo(DemoConfig(out=str(out), data=str(phantom_root), weights="none", gallery=6))
    config = json.loads((out / "run" / "config.json").read_text())
    assert config["recipe"] == "quick" and config["stages"] == ["head"] and config["model"] == "densenet121"
    assert summary["real_films"] and "lesions" not in summary and len(summary["gallery"]) == 6
    page = (out / "report.html").read_text()
    assert "quick recipe" in page and "refuses real chest X-rays" not in page and 'id="lesions"' not in page

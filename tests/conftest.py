"""Shared fixtures: small synthetic datasets made on the fly, and the location of ../shared."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_DATA = SHARED / "data" / "chest_xray_224"
ORIG256 = SHARED / "data" / "chest_xray_orig256"
DENSENET_WEIGHTS = SHARED / "weights" / "densenet121_imagenet_keras.pth"
RESNET_WEIGHTS = SHARED / "weights" / "resnet50_imagenet_keras_partial.pth"
# Input checks fitted on few examples, and few validation images under the acquisition shifts: tests of training,
# comparing and tuning need checks and a threshold that exist, not good ones, and fitting the defaults (over a
# thousand made and copied images through the network) took about a quarter of a tiny run. tiny_run keeps the defaults:
# test_input_checks measures its gate on held-out made images.
LIGHT_CHECKS = {"made_per_kind": 8, "exposure_examples": 16, "resampled_examples": 16}
LIGHT_SHIFT_IMAGES = 8


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")


def launch_chromium(playwright, *extra_args: str):
    """Debian's headless Chromium, with the flags this closed network needs (no background connections)."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
              "--no-first-run", "--disable-sync", *extra_args])


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n auto``) each worker gets its share of the cores, for torch and for
    the processes its tests start: the tiny models of the tests gain nothing from a second thread, and N workers
    with every core each ran the suite slower than one process."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


def needs(path: Path):
    """Skip a test (with the reason) where a ../shared resource is absent."""
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is not here")


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the Kaggle layout (64 px phantoms), made once per test session."""
    from pneumoscan.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("phantoms"), n_train=96, n_test=32, size=64, seed=1)


@pytest.fixture(scope="session")
def tiny_run(phantom_root, tmp_path_factory) -> Path:
    """A trained (seconds-long) baseline run on the 64 px phantoms, with threshold and OOD detector."""
    from pneumoscan.train import TrainConfig, train
    from pneumoscan.train.config import FullStage

    out = tmp_path_factory.mktemp("tiny_run")
    config = TrainConfig(data=str(phantom_root), out=str(out / "run"), model="baseline_cnn", image_size=64,
                         full=FullStage(epochs=4, lr=3e-3), batch_size=16, workers=0, n_boot=50, val_fraction=0.25,
                         cache_dir=str(out / "cache"), shift_report=False)
    return train(config)


@pytest.fixture(scope="session")
def brain_mri_model(tmp_path_factory) -> Path:
    """A folder with a (random) four-class brain MRI model.pt, described as training would describe it."""
    import torch

    from pneumoscan.data.known import BRAIN_MRI_FOLDERS
    from pneumoscan.data.labels import class_map
    from pneumoscan.data.preprocess import Preprocessing
    from pneumoscan.models.checkpoint import LoadedModel, save_model
    from pneumoscan.models.networks import build_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("brain_mri_model")
    model = build_model("baseline_cnn", preprocessing=Preprocessing(image_size=64), outputs=4).eval()
    described = LoadedModel.of(model, classes=class_map(list(BRAIN_MRI_FOLDERS))).description
    save_model(folder / "model.pt", model, described)
    return folder


TINY_SEGMENTER = ["epochs=8", "lr=0.01", "batch_size=8", "segmenter.image_size=64", "segmenter.channels=[8,16,32]",
                  "segmenter.strides=[2,2]"]


@pytest.fixture(scope="session")
def lung_run(tmp_path_factory) -> Path:
    """A lung segmenter trained (seconds) on phantoms with drawn lungs, with its frontal check."""
    from pneumoscan.cli import main
    from pneumoscan.data.synthetic import write_lung_mask_folder

    root = tmp_path_factory.mktemp("lungs")
    data = write_lung_mask_folder(root / "data", n_train=96, n_test=8, size=64)
    assert main(["segment", "train", "--data", str(data), "--out", str(root / "run"), "--set", *TINY_SEGMENTER]) == 0
    return root / "run"


@pytest.fixture(scope="session")
def lung_model(tiny_run, lung_run, tmp_path_factory) -> Path:
    """A copy of the tiny run that draws the lungs with the phantom segmenter (``segment attach``)."""
    from pneumoscan.cli import main

    run = tmp_path_factory.mktemp("lung_model") / "run"
    shutil.copytree(tiny_run, run)
    assert main(["segment", "attach", str(run), str(lung_run)]) == 0
    return run


def one_lung_film(film: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """The film with its right lung filled in with the body's grey: one lung field, as a lateral view shows."""
    right = lungs & (np.arange(film.shape[1]) >= film.shape[1] // 2)[None, :]
    body = film[~lungs & (film > 0.3)]
    filled = film.copy()
    filled[right] = float(np.median(body))
    return filled


@pytest.fixture(scope="session")
def tiny_settings(tmp_path_factory) -> Path:
    """A train --config file of seconds-long settings (64 px, 1-2 epochs per stage, no workers)."""
    path = tmp_path_factory.mktemp("settings") / "tiny.json"
    path.write_text(json.dumps({"image_size": 64, "train_views": 2, "head": {"epochs": 2}, "tail": {"epochs": 1},
                                "full": {"epochs": 2}, "batch_size": 16, "workers": 0, "n_boot": 30,
                                "val_fraction": 0.25, "shift_report": False, "shift_images": LIGHT_SHIFT_IMAGES,
                                "input_checks": LIGHT_CHECKS}))
    return path


@pytest.fixture(scope="session")
def postgres_url():
    """A running PostgreSQL database for the duration of the tests (skips, with the reason, where none starts)."""
    pytest.importorskip("psycopg2", reason="psycopg2 (pip install pneumoscan[postgres]) talks to PostgreSQL")
    from tests.postgres import start_server

    try:
        url, stop = start_server()
    except RuntimeError as err:
        pytest.skip(f"no PostgreSQL server: {err}")
    yield url
    stop()

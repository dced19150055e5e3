"""Shared fixtures: small synthetic datasets made on the fly, and the location of ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_DATA = SHARED / "data" / "chest_xray_224"
ORIG256 = SHARED / "data" / "chest_xray_orig256"
DENSENET_WEIGHTS = SHARED / "weights" / "densenet121_imagenet_keras.pth"
RESNET_WEIGHTS = SHARED / "weights" / "resnet50_imagenet_keras_partial.pth"


def needs(path: Path):
    """Skip a test (with the reason) where a ../shared resource is absent."""
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is not here")


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the Kaggle layout (64 px phantoms), made once per test session."""
    from pneumoscan.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("phantoms"), n_train=96, n_test=32, size=64, seed=1)

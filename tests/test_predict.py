"""Tests of pneumoscan.predict: inputs from files, folders and CSVs; broken files become error rows."""

from __future__ import annotations

import numpy as np

from pneumoscan.checkpoint import load_model
from pneumoscan.predict import expand_inputs, predict_paths


def test_expand_inputs_from_folder_csv_and_file(phantom_root, tmp_path):
    from_folder = expand_inputs([str(phantom_root / "test")])
    assert len(from_folder) == 32 and all(p.endswith(".jpeg") for p in from_folder)
    listing = tmp_path / "few.csv"
    listing.write_text("path,label\n" + "".join(f"{p},0\n" for p in from_folder[:2]))
    assert expand_inputs([str(listing), from_folder[5]]) == from_folder[:2] + [from_folder[5]]


def test_predictions_keep_order_and_report_errors(tiny_run, phantom_root, tmp_path):
    loaded = load_model(tiny_run)
    paths = expand_inputs([str(phantom_root / "test")])[:5]
    missing = str(tmp_path / "missing.png")
    predictions = predict_paths(loaded.model, paths[:2] + [missing] + paths[2:], threshold=loaded.threshold,
                                batch_size=2)
    assert [p.path for p in predictions] == paths[:2] + [missing] + paths[2:]
    assert predictions[2].probability is None and "no such file" in predictions[2].error
    fine = [p for p in predictions if not p.error]
    assert all(0 <= p.probability <= 1 for p in fine)
    again = predict_paths(loaded.model, paths, threshold=loaded.threshold, batch_size=5, precision="fp32")
    np.testing.assert_allclose([p.probability for p in fine], [p.probability for p in again], atol=0.02)

"""Screenings and film headers for the DICOM node's result tests: a made-up model description, scored
screenings with lungs and a heatmap on a small grid, and DX headers as the node reads them."""

from __future__ import annotations

import datetime
import io

import numpy as np
import pydicom
from tests.dicom_films import dx_film, new_study

from pneumoscan.inference.screen import SCORED, Screening
from pneumoscan.models.description import ModelDescription

NOW = datetime.datetime(2026, 12, 6, 9, 30, 15, 250000)


def description() -> ModelDescription:
    return ModelDescription(
        task="NORMAL vs PNEUMONIA on chest X-ray", classes=("NORMAL", "PNEUMONIA"), display={}, modality="chest X-ray",
        population="paediatric chest X-rays (Guangzhou)", intended_use="research on screening", limitations=(),
        arch="baseline_cnn", arch_kwargs={}, preprocessing={}, threshold=0.42, threshold_rule="youden")


def screening(rng, p: float, **fields) -> Screening:
    size = 32
    lungs = np.zeros((size, size), bool)
    lungs[8:24, 4:14] = lungs[8:24, 18:28] = True
    return Screening("film.dcm", SCORED, probabilities={"NORMAL": 1 - p, "PNEUMONIA": p},
                     label="PNEUMONIA" if p >= 0.42 else "NORMAL", threshold=0.42, shift_score=0.3,
                     heatmap=rng.random((size, size), dtype=np.float32), explained="PNEUMONIA",
                     image=rng.random((size, size), dtype=np.float32), lungs=lungs, heat_in_lungs=p / 2,
                     lung_area_fraction=0.3, **fields)


def source(i: int, **attributes) -> pydicom.Dataset:
    ds = dx_film(np.full((16, 16), 0.5), new_study(i))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()), stop_before_pixels=True)  # as the node reads a header

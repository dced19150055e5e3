"""node.presentation: the presentation state draws the lung outline and the heatmap's contours where they are on
the original film (whatever its size), carries the outcome, references the source, and passes the standard's
checks (DCMTK's dcmpschk, dicom3tools' dciodvfy); maker.ResultMaker adds it only where asked, for scored
films. The node's report and overlay pass dciodvfy too."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from tests.node_screenings import NOW, description, screening, source

from pneumoscan.inference.screen import REFUSED, Screening
from pneumoscan.node.maker import ResultMaker
from pneumoscan.node.presentation import contours, presentation_state
from pneumoscan.node.results import Film, keep_screening, picture
from pneumoscan.node.stencil import encoded

ROWS, COLUMNS = 96, 160  # 3 and 5 times the screenings' 32 x 32 grid


def scored_film(rng, **header) -> Film:
    film = Film(screening(rng, 0.9), source(1, Rows=ROWS, Columns=COLUMNS, **header), NOW)
    return replace(film, picture=picture(film.screening))


def layer_points(state, layer: str) -> np.ndarray:
    annotation = next(a for a in state.GraphicAnnotationSequence if a.GraphicLayer == layer)
    return np.concatenate([np.reshape(g.GraphicData, (-1, 2)) for g in annotation.GraphicObjectSequence])


def test_the_lung_outline_lies_on_the_lungs_edges_in_the_films_pixels():
    state = presentation_state(scored_film(np.random.default_rng(0)), description(), "1")
    points = layer_points(state, "LUNGS")  # the grid's lungs: rows 8-23, columns 4-13 and 18-27
    assert points[:, 1].min() == pytest.approx(8 * 3) and points[:, 1].max() == pytest.approx(24 * 3)
    assert points[:, 0].min() == pytest.approx(4 * 5) and points[:, 0].max() == pytest.approx(28 * 5)
    assert not ((points[:, 0] > 14 * 5) & (points[:, 0] < 18 * 5)).any()  # nothing between the two lungs


def test_a_heat_contour_circles_the_heat_where_it_is_on_the_film():
    rows, columns = np.mgrid[0:32, 0:32]
    heat = np.exp(-((rows - 10) ** 2 + (columns - 20) ** 2) / 18.0)
    lines = contours(heat, (0.5,), ROWS, COLUMNS)
    assert len(lines) == 1
    centre = lines[0].mean(axis=0)
    assert centre == pytest.approx([(20 + 0.5) * 5, (10 + 0.5) * 3], abs=0.5)
    radius = np.sqrt(18.0 * np.log(2))  # where the blob is half its peak, in grid pixels
    distances = np.hypot((lines[0][:, 0] - centre[0]) / 5, (lines[0][:, 1] - centre[1]) / 3)
    assert distances == pytest.approx(radius, rel=0.05)


def test_the_presentation_state_references_its_film_and_says_the_outcome():
    film = scored_film(np.random.default_rng(1))
    state = presentation_state(film, description(), "1")
    assert state.Modality == "PR" and state.StudyInstanceUID == film.source.StudyInstanceUID
    assert state.PatientID == film.source.PatientID and state.SeriesInstanceUID != film.source.SeriesInstanceUID
    referenced = state.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert referenced.ReferencedSOPInstanceUID == film.source.SOPInstanceUID
    assert [layer.GraphicLayer for layer in state.GraphicLayerSequence] == ["LUNGS", "HEATMAP", "OUTCOME"]
    text = next(a for a in state.GraphicAnnotationSequence if a.GraphicLayer == "OUTCOME").TextObjectSequence[0]
    assert "PNEUMONIA p=0.900" in text.UnformattedTextValue and "RESEARCH USE" in text.UnformattedTextValue
    again = presentation_state(film, description(), "1")  # screened again after a restart: the same object
    assert again.SOPInstanceUID == state.SOPInstanceUID


def test_a_colour_film_gets_no_presentation_state_and_a_failing_one_costs_only_itself(tmp_path, caplog):
    keep_screening(tmp_path / "film", screening(np.random.default_rng(5), 0.7))
    colour = source(5, Rows=ROWS, Columns=COLUMNS, PhotometricInterpretation="RGB", SamplesPerPixel=3)
    assert presentation_state(Film(screening(np.random.default_rng(5), 0.7), colour, NOW), description(), "1") is None
    drawing = ResultMaker(description(), "1", built_whole={"pr": presentation_state})
    assert [p.name for p in drawing.make(tmp_path / "film", colour)] == ["sr.dcm", "sc.dcm"]

    def broken(film, description, version):
        raise ValueError("no such thing")

    failing = ResultMaker(description(), "1", built_whole={"pr": broken})
    assert [p.name for p in failing.make(tmp_path / "film", source(6))] == ["sr.dcm", "sc.dcm"]
    assert "no pr (ValueError: no such thing)" in caplog.text


def test_a_maker_adds_the_presentation_state_only_where_asked_and_only_for_scored_films(tmp_path):
    rng = np.random.default_rng(2)
    header = source(2, Rows=ROWS, Columns=COLUMNS)
    for name, kept in (("scored", screening(rng, 0.7)),
                       ("refused", Screening("lateral.dcm", REFUSED, reason="not a frontal chest X-ray"))):
        keep_screening(tmp_path / name, kept)
    plain, drawing = ResultMaker(description(), "1"), ResultMaker(description(), "1",
                                                                 built_whole={"pr": presentation_state})
    assert [p.name for p in plain.make(tmp_path / "scored", header)] == ["sr.dcm", "sc.dcm"]
    assert [p.name for p in drawing.make(tmp_path / "scored", header)] == ["sr.dcm", "sc.dcm", "pr.dcm"]
    assert [p.name for p in drawing.make(tmp_path / "refused", header)] == ["sr.dcm"]
    assert pydicom.dcmread(tmp_path / "scored" / "pr.dcm").SOPClassUID.name == \
        "Grayscale Softcopy Presentation State Storage"


def tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} (Debian: apt-get install {package}) checks DICOM objects against the standard")
    return found


def dciodvfy_errors(data: bytes, folder: Path) -> list[str]:
    """What dicom3tools' validator calls an error in the DICOM file ``data``."""
    path = folder / "checked.dcm"
    path.write_bytes(data)
    out = subprocess.run([tool("dciodvfy", "dicom3tools"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_the_report_overlay_and_presentation_state_pass_the_standards_validator(tmp_path):
    film = scored_film(np.random.default_rng(3))
    maker = ResultMaker(description(), "1")
    for kind in ("sr", "sc"):  # as the node sends them: filled in from their stencils
        assert dciodvfy_errors(maker.file(kind, film), tmp_path) == [], kind
    assert dciodvfy_errors(encoded(presentation_state(film, description(), "1")), tmp_path) == []


def test_the_presentation_state_passes_dcmtks_presentation_state_check(tmp_path):
    path = tmp_path / "pr.dcm"
    path.write_bytes(encoded(presentation_state(scored_film(np.random.default_rng(4)), description(), "1")))
    out = subprocess.run([tool("dcmpschk", "dcmtk"), str(path)], capture_output=True, text=True, timeout=60)
    assert "Test passed" in out.stdout + out.stderr, out.stdout + out.stderr

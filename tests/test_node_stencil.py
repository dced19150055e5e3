"""node.stencil and maker.ResultMaker: a report or overlay filled in from a stencil is, byte for byte, what
highdicom builds and pydicom encodes for that film; a stencil that does not pass its check is never used."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pydicom
import pytest
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from tests.node_screenings import NOW, description, screening, source

from pneumoscan.inference.screen import REFUSED, Screening
from pneumoscan.node.maker import ResultMaker, marker_film
from pneumoscan.node.results import Film, picture
from pneumoscan.node.stencil import element_bytes, encoded, make_stencil


def films(rng) -> list[Film]:
    """Films of several kinds, each kind twice with other patients, studies and values (and pixels stored
    otherwise)."""
    made = []
    for i in range(2):
        made += [Film(screening(rng, 0.91 - i / 7), source(10 + i, LossyImageCompression=f"0{i}"), NOW),
                 Film(screening(rng, 0.05 + i / 9), source(20 + i, PatientName=f"Müller^Jürgen{i}",
                                                            **({"SpecificCharacterSet": "ISO_IR 192"} if i else {})),
                      NOW),
                 Film(screening(rng, 0.77 + i / 50, flagged=True, warning=f"unlike the population ({0.3 + i})"),
                      source(30 + i, ReferringPhysicianName=f"Doc^Tor{i}"), NOW),
                 Film(Screening("lateral.dcm", REFUSED, reason=f"not a frontal chest X-ray ({i})"), source(40 + i),
                      NOW)]
    return [replace(f, picture=picture(f.screening)) if f.screening.scored else f for f in made]


def test_a_result_from_its_stencil_is_highdicoms_build_byte_for_byte():
    maker, rng = ResultMaker(description(), "9.8.7"), np.random.default_rng(0)
    for film in films(rng):
        for kind in ("sr", "sc") if film.picture is not None else ("sr",):
            assert maker.file(kind, film) == encoded(maker.build(kind, film))
    used = [stencil for stencil in maker.stencils.values() if stencil is not None]
    assert len(used) == len(maker.stencils) == 7  # report and overlay, flagged or not, in UTF-8, a refusal's report
    assert all(len(stencil.holes) >= 10 for stencil in used)


def test_past_its_stencils_a_maker_builds_with_highdicom():
    maker, film = ResultMaker(description(), "9.8.7"), films(np.random.default_rng(4))[0]
    maker.MAX_STENCILS = 0
    assert maker.file("sr", film) == encoded(maker.build("sr", film)) and not maker.stencils


def test_a_filled_report_is_a_valid_sr_that_says_what_the_screening_said():
    import highdicom as hd

    maker, film = ResultMaker(description(), "9.8.7"), films(np.random.default_rng(1))[2]
    maker.file("sr", films(np.random.default_rng(2))[2])  # the stencil, made on another film
    report = pydicom.dcmread(io.BytesIO(maker.file("sr", film)))
    parsed = hd.sr.Comprehensive3DSR.from_dataset(report)
    assert report.PatientID == film.source.PatientID and report.StudyInstanceUID == film.source.StudyInstanceUID
    values = {str(item.ConceptNameCodeSequence[0].CodeMeaning): item for item in report.ContentSequence[-1]
              .ContentSequence[0].ContentSequence}
    assert float(values["Probability of PNEUMONIA"].MeasuredValueSequence[0].FloatingPointValue) == pytest.approx(
        film.screening.probabilities["PNEUMONIA"], abs=1e-12)
    assert values["Flagged"].TextValue == film.screening.warning
    assert report.ContentDate == "20261206" and report.ContentTime == "093015.250000"
    assert parsed.SOPInstanceUID == report.file_meta.MediaStorageSOPInstanceUID


def test_a_stencil_that_fails_its_check_is_not_used():
    maker, film = ResultMaker(description(), "9.8.7"), films(np.random.default_rng(3))[0]

    def build(f: Film):
        report = maker.build("sr", f)
        report.StudyComments = f"{f.screening.probabilities['PNEUMONIA']:.3f}"  # a value no hole is named for
        return report

    assert make_stencil(lambda f: maker.build("sr", f), maker.values, *markers(film)) is not None
    assert make_stencil(build, maker.values, *markers(film)) is None


def markers(film: Film) -> tuple[Film, Film]:
    return marker_film(film, 1), marker_film(film, 2)


@pytest.mark.parametrize(("vr", "value"), [("UI", "1.2.3.45"), ("UI", "1.2.3.4"), ("PN", "Doe^Jane"), ("DS", "0.125"),
                                           ("LO", "odd"), ("UT", "a long text " * 30), ("DA", "20261206"),
                                           ("FD", 0.123456789), ("PN", "Müller^Jürgen")])
def test_an_element_is_encoded_as_pydicom_encodes_it(vr, value):
    encodings = convert_encodings("ISO_IR 192")
    stream = DicomBytesIO()
    stream.is_little_endian, stream.is_implicit_VR = True, False
    write_data_element(stream, DataElement(0x00100010 if vr == "PN" else 0x00081030, vr, value), encodings)
    assert element_bytes(0x00100010 if vr == "PN" else 0x00081030, vr, value, encodings) == stream.getvalue()


def test_a_maker_warms_up_on_a_made_up_film_and_keeps_no_stencil_for_it():
    maker = ResultMaker(description(), "9.8.7")
    maker.warm_up()
    assert not maker.stencils

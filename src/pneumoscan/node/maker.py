"""How the DICOM side makes a screened film's results as files, fast: ``ResultMaker`` has highdicom build each
kind of report and overlay (``node.results``) once per kind of film, for marker films, cuts the build into a
checked stencil (``node.stencil``) and fills it in for every other film of that kind; what no stencil can
follow is built by highdicom for every film.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pydicom.valuerep import DS

from pneumoscan.inference.screen import REFUSED, Screening
from pneumoscan.models.description import ModelDescription
from pneumoscan.node.inbox import replaced_write
from pneumoscan.node.results import (
    Film,
    concept,
    kept_screening,
    model_name,
    notes,
    outcome,
    overlay_capture,
    picture,
    result_uid,
    structured_report,
    timestamps,
)
from pneumoscan.node.stencil import Stencil, encoded, make_stencil, marker_source, source_key, source_values

log = logging.getLogger(__name__)


class ResultMaker:
    """Makes the report and overlay of screenings kept beside the inbox, for one model. Each kind of object for
    each kind of film (outcome, notes, the source's attributes) is built by highdicom once, for marker films,
    and cut into a checked stencil; the others are filled in from it. Where no stencil passes its check, every
    object of that kind is built by highdicom. Past ``MAX_STENCILS`` kinds (a source whose unmarked attributes
    change with every film would make one per film), new kinds are built by highdicom too.

    ``built_whole``: further objects for each scored film, by file stem (the node's ``--gsps``: a presentation
    state), built by their function for every film: how many items they hold changes from film to film, which
    no stencil can follow. A function returns None for a film it has nothing for; one that fails costs the film
    that object alone (logged), never its report or overlay."""

    KINDS = {"sr": structured_report, "sc": overlay_capture}
    MAX_STENCILS = 256

    def __init__(self, description: ModelDescription, version: str, *,
                 built_whole: dict[str, Callable[[Film, ModelDescription, str], Dataset | None]] | None = None):
        self.description, self.version = description, version
        self.built_whole = dict(built_whole or {})
        self.stencils: dict[tuple, Stencil | None] = {}

    def warm_up(self) -> None:
        """Build one report for a made-up film, so that what highdicom reads once (the standard's module tables,
        about 2 s of JSON) is read before the first film arrives, not while it waits."""
        from pydicom.uid import DigitalXRayImageStorageForPresentation

        source = Dataset()
        source.SOPClassUID, source.SOPInstanceUID = DigitalXRayImageStorageForPresentation, generate_uid()
        source.StudyInstanceUID, source.SeriesInstanceUID = generate_uid(), generate_uid()
        for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                        "StudyDate", "StudyTime"):
            setattr(source, keyword, "")
        source.Rows = source.Columns = source.SamplesPerPixel = 1
        source.PhotometricInterpretation, source.Modality = "MONOCHROME2", "DX"
        screening = Screening("warm-up", REFUSED, reason="warm-up")
        structured_report(Film(screening, source, datetime.datetime.now()), self.description, self.version)

    def make(self, folder: Path, source: Dataset) -> list[Path]:
        """The report (and, for a scored film, the overlay and what is ``built_whole``) of the screening kept in
        ``folder``, written there."""
        screening = kept_screening(folder)
        overlaid = screening.scored and screening.heatmap is not None
        film = Film(screening, source, datetime.datetime.now(), picture(screening) if overlaid else None)
        values, kind_of_film = self.values(film), self.kind_of_film(film)  # once for both objects
        made = {"sr.dcm": self._file("sr", film, values, kind_of_film)}
        if overlaid:
            made["sc.dcm"] = self._file("sc", film, values, kind_of_film)
            made |= self.extras(film)
        for name, data in made.items():  # whole or absent, not synced: a result lost in a crash is made again
            replaced_write(folder / name, data)
        return [folder / name for name in made]

    def extras(self, film: Film) -> dict[str, bytes]:
        """The files of what is ``built_whole`` for ``film``, by name."""
        files = {}
        for stem, build in self.built_whole.items():
            try:
                dataset = build(film, self.description, self.version)
            except Exception as err:  # noqa: BLE001 - an optional object's failure keeps the film's other results
                log.warning("%s: no %s (%s: %s); its report and overlay are sent", film.source.SOPInstanceUID, stem,
                            type(err).__name__, err)
                continue
            if dataset is not None:
                files[f"{stem}.dcm"] = encoded(dataset)
        return files

    def file(self, kind: str, film: Film) -> bytes:
        """The DICOM file of the ``kind`` of result of ``film``."""
        return self._file(kind, film, self.values(film), self.kind_of_film(film))

    def _file(self, kind: str, film: Film, values: dict[str, object], kind_of_film: tuple) -> bytes:
        key = (kind, *kind_of_film)
        if key not in self.stencils and len(self.stencils) < self.MAX_STENCILS:
            self.stencils[key] = make_stencil(lambda f: self.build(kind, f), self.values, marker_film(film, 1),
                                              marker_film(film, 2))
        stencil = self.stencils.get(key)
        return stencil.fill(values) if stencil else encoded(self.build(kind, film))

    def build(self, kind: str, film: Film) -> Dataset:
        return self.KINDS[kind](film, self.description, self.version)

    def kind_of_film(self, film: Film) -> tuple:
        """What a stencil holds as it is: whether scored, the notes given, the classes, the source's coded values."""
        s = film.screening
        return (s.status, s.flagged, tuple(s.probabilities), tuple(n[0] for n in notes(s, self.description)),
                None if film.picture is None else film.picture.shape, source_key(film.source))

    def values(self, film: Film) -> dict[str, object]:
        """A film's values that change from film to film, by name: what stencils' holes are filled with."""
        screening, model = film.screening, model_name(self.description)
        uid = str(film.source.SOPInstanceUID)
        values: dict[str, object] = source_values(film.source) | timestamps(film.now)
        values |= {f"uid {kind}": result_uid(uid, kind, model) for kind in ("tracking", "sr series", "sr",
                                                                            "sc series", "sc")}
        for name, p in screening.probabilities.items():
            values[f"p {name}"], values[f"p {name} text"] = float(p), DS(p, auto_format=True)
        values |= {f"note {code}": text for code, _, text in notes(screening, self.description)}
        code = concept(outcome(screening), outcome(screening))
        values["outcome"], values["outcome meaning"] = code.value, code.meaning
        if film.picture is not None:
            values["pixels"] = film.picture.tobytes()
        return values


def marker_film(film: Film, seed: int) -> Film:
    """``film`` with a marker in place of each value that changes from film to film (``seed``: which set)."""
    s = film.screening
    probabilities = {c: round(0.1 + 0.01 * seed + 0.0001 * i + 1e-7, 8) for i, c in enumerate(s.probabilities)}
    screening = replace(
        s, label=s.label and f"MK LABEL{seed}", probabilities=probabilities,
        warning=s.warning and f"marker warning {seed}", reason=s.reason and f"marker reason {seed}",
        heat_in_lungs=None if s.heat_in_lungs is None else 0.0123 + 0.0111 * seed)
    rng = np.random.default_rng(seed)
    return Film(screening, marker_source(film.source, seed), datetime.datetime(1800 + seed, 2, 3, 4, 5, 6, 7000 + seed),
                None if film.picture is None else rng.integers(0, 256, film.picture.shape, dtype=np.uint8))

"""What the DICOM node sends back into the study: a Structured Report of the screening (highdicom, TID 1500
measurement report) and a Secondary Capture of the overlay (film, heatmap, lung outline) marked "research use".

Both are new series in the source's study, with the source's patient and study identifiers. Their UIDs are
derived from the source instance and the model, so screening an instance again (a node restarted mid-batch)
makes the same objects, which a PACS stores once. The screening process keeps each screening beside the inbox
(``keep_screening``: its fields as JSON, its maps as arrays); the DICOM side makes the objects from it
(``ResultMaker``), so their Python work never holds up the network's inference. highdicom builds each kind of
object once per kind of film; the others are filled in from that build's checked stencil (``node.stencil``).
"""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DS

from pneumoscan.explain.render import overlay
from pneumoscan.inference.screen import REFUSED, Screening
from pneumoscan.models.description import ModelDescription
from pneumoscan.node.inbox import replaced_write
from pneumoscan.node.stencil import Stencil, encoded, make_stencil, marker_source, source_key, source_values

MAPS = ("heatmap", "image", "lungs")  # a screening's arrays, kept beside its fields

SCHEME = "99PNEUMOSCAN"  # private coding scheme for the model's own concepts (its classes, the outcome)
CHEST_X_RAY = Code("399208008", "SCT", "Plain chest X-ray")
RESEARCH_USE = "RESEARCH USE ONLY - NOT FOR DIAGNOSIS"
SR_SERIES, SC_SERIES, PR_SERIES = 9901, 9902, 9903  # report, overlay, presentation state


def result_uid(source_uid: str, kind: str, model: str) -> str:
    """A UID for the ``kind`` of result (sr/sc, and their series) of a source instance and model: the same
    every time the same model screens the same instance."""
    return generate_uid(entropy_srcs=[source_uid, kind, model])


def model_name(description: ModelDescription) -> str:
    return f"pneumoscan {description.arch} ({description.task})"


@dataclass(frozen=True)
class Film:
    """What a film's results are made of: its screening, its header, when they are made and, for a scored film,
    the overlay with its banner."""

    screening: Screening
    source: Dataset
    now: datetime.datetime
    picture: np.ndarray | None = None


def structured_report(film: Film, description: ModelDescription, version: str) -> Dataset:
    """The screening as a TID 1500 measurement report: the outcome, each class's probability, the label at the
    validated threshold, the flag and its warning or the refusal's reason, the model, and the source image."""
    import highdicom as hd

    screening, source, model = film.screening, film.source, model_name(description)
    uid = source.SOPInstanceUID
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=result_uid(uid, "tracking", model),
                                                     identifier="pneumoscan screening"),
        algorithm_id=hd.sr.AlgorithmIdentification(name=model, version=version),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=[hd.sr.Measurement(name=concept(f"p {name}", f"Probability of {name}"), value=p,
                                        unit=codes.UCUM.NoUnits) for name, p in screening.probabilities.items()],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=concept("outcome", "Screening outcome"),
                                                             value=concept(outcome(screening), outcome(screening)))],
    )
    content = group[0].ContentSequence
    for name, meaning, text in notes(screening, description):
        content.append(hd.sr.TextContentItem(name=concept(name, meaning), value=text, relationship_type="CONTAINS"))
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=result_uid(model, "device", version), name="pneumoscan",
                                                       model_name=model)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device)),
        procedure_reported=CHEST_X_RAY, imaging_measurements=[group], title=codes.DCM.ImagingMeasurementReport)
    return stamped(hd.sr.Comprehensive3DSR(
        evidence=[source], content=report[0], series_instance_uid=result_uid(uid, "sr series", model),
        series_number=SR_SERIES, sop_instance_uid=result_uid(uid, "sr", model), instance_number=1,
        manufacturer="pneumoscan", is_complete=True, series_description=f"pneumoscan screening ({RESEARCH_USE})"),
        film.now)


def stamped(dataset: Dataset, now: datetime.datetime) -> Dataset:
    """``dataset`` with its creation and content dates and times (and its equipment's contribution time) ``now``."""
    stamp = timestamps(now)
    for keyword, value in (("InstanceCreationDate", "date"), ("InstanceCreationTime", "time"), ("ContentDate", "date"),
                           ("ContentTime", "time"), ("DateOfSecondaryCapture", "date"),
                           ("TimeOfSecondaryCapture", "time")):
        if keyword in dataset:
            setattr(dataset, keyword, stamp[value])
    for item in dataset.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = stamp["datetime"]
    return dataset


def timestamps(now: datetime.datetime) -> dict[str, str]:
    """The per-film values ``stamped`` writes, by name."""
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    return {"date": date, "time": time, "datetime": date + time}


def concept(value: str, meaning: str) -> Code:
    return Code(value.replace(" ", "-")[:16], SCHEME, meaning[:64])


def outcome(screening: Screening) -> str:
    """The report's one-word outcome: the label when scored, else NOT SCREENED."""
    return screening.label if screening.scored else "NOT SCREENED"


def notes(screening: Screening, description: ModelDescription) -> list[tuple[str, str, str]]:
    """(code, meaning, text) items the report carries besides the numbers."""
    items = [("intended use", "Intended use", f"{description.intended_use} {RESEARCH_USE}".strip())]
    if screening.scored and screening.threshold is not None:
        items.append(("threshold", "Decision threshold", f"{screening.label} at the validated threshold "
                                                         f"{screening.threshold:.4f} of the positive class"))
    if screening.flagged:
        items.append(("warning", "Flagged", screening.warning or "unlike the training population"))
    if not screening.scored:
        items.append(("reason", "Not screened because", screening.reason))
    if screening.heat_in_lungs is not None:
        items.append(("heat in lungs", "Heatmap in the lungs", f"{screening.heat_in_lungs:.1%} of the heatmap"))
    return [(code, meaning, text[:1024]) for code, meaning, text in items]


def overlay_capture(film: Film, description: ModelDescription, version: str) -> Dataset:
    """A Secondary Capture of the film's overlay with its banner (RGB): "research use" is on the image itself."""
    import highdicom as hd

    model = model_name(description)
    uid = film.source.SOPInstanceUID
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=film.source, pixel_array=film.picture, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=result_uid(uid, "sc series", model),
        sop_instance_uid=result_uid(uid, "sc", model), series_number=SC_SERIES, instance_number=1,
        manufacturer="pneumoscan", patient_orientation=("L", "F"), transfer_syntax_uid=ExplicitVRLittleEndian)
    capture.SeriesDescription = f"pneumoscan heatmap ({RESEARCH_USE})"
    capture.BurnedInAnnotation = "YES"
    capture.SoftwareVersions = version
    capture.ImageComments = f"{model}, {description.intended_use}"[:10240]
    return stamped(with_body_part(capture, film.source), film.now)


def with_body_part(dataset: Dataset, source: Dataset) -> Dataset:
    """``dataset`` with the source's Body Part Examined, where it has one (a viewer's hanging protocols and a
    validator's laterality rule read it)."""
    if source.get("BodyPartExamined"):
        dataset.BodyPartExamined = source.BodyPartExamined
    return dataset


def picture(screening: Screening) -> np.ndarray:
    """The overlay (film, heatmap, lung outline) with its banner: the outcome and "research use"."""
    title = f"{outcome(screening)} p={screening.probability:.3f}" if screening.scored else outcome(screening)
    return with_banner(overlay(screening.image, screening.heatmap, lungs=screening.lungs), [title, RESEARCH_USE])


def with_banner(rgb: np.ndarray, lines: list[str], scale: int = 2) -> np.ndarray:
    """The image enlarged ``scale`` times (each pixel a ``scale``-wide square) under a black band with ``lines`` of
    text."""
    from PIL import Image, ImageDraw

    height, width = rgb.shape[:2]
    band = Image.new("RGB", (width * scale, 14 * len(lines) + 8))
    draw = ImageDraw.Draw(band)
    for i, line in enumerate(lines):
        draw.text((6, 4 + 14 * i), line, fill=(255, 255, 0) if i else (255, 255, 255))
    enlarged = np.broadcast_to(rgb[:, None, :, None], (height, scale, width, scale, 3))
    return np.concatenate([np.asarray(band), enlarged.reshape(height * scale, width * scale, 3)])


def keep_screening(folder: Path, screening: Screening) -> None:
    """A screening's fields (``screening.json``) and maps (``maps.npz``) in ``folder`` (each whole or absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    fields = {k: v for k, v in asdict(screening).items() if k not in MAPS}
    maps = {k: getattr(screening, k) for k in MAPS if getattr(screening, k) is not None}
    if maps:
        buffer = io.BytesIO()
        np.savez(buffer, **maps)
        replaced_write(folder / "maps.npz", buffer.getvalue())
    replaced_write(folder / "screening.json", json.dumps(fields).encode())


def kept_screening(folder: Path) -> Screening:
    """The screening ``keep_screening`` kept (``FileNotFoundError``/``ValueError`` when it is lost or cut)."""
    fields = json.loads((folder / "screening.json").read_text())
    if (folder / "maps.npz").exists():
        with np.load(folder / "maps.npz") as maps:
            fields |= {k: maps[k] for k in maps.files}
    return Screening(**fields)


class ResultMaker:
    """Makes the report and overlay of screenings kept beside the inbox, for one model. Each kind of object for
    each kind of film (outcome, notes, the source's attributes) is built by highdicom once, for marker films,
    and cut into a checked stencil; the others are filled in from it. Where no stencil passes its check, every
    object of that kind is built by highdicom. Past ``MAX_STENCILS`` kinds (a source whose unmarked attributes
    change with every film would make one per film), new kinds are built by highdicom too.

    ``built_whole``: further objects for each scored film, by file stem (the node's ``--gsps``: a presentation
    state), built by their function for every film: how many items they hold changes from film to film, which
    no stencil can follow."""

    KINDS = {"sr": structured_report, "sc": overlay_capture}
    MAX_STENCILS = 256

    def __init__(self, description: ModelDescription, version: str, *,
                 built_whole: dict[str, Callable[[Film, ModelDescription, str], Dataset]] | None = None):
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
            for stem, build in self.built_whole.items():
                made[f"{stem}.dcm"] = encoded(build(film, self.description, self.version))
        for name, data in made.items():  # whole or absent, not synced: a result lost in a crash is made again
            replaced_write(folder / name, data)
        return [folder / name for name in made]

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

"""What the DICOM node sends back into the study: a Structured Report of the screening (highdicom, TID 1500
measurement report) and a Secondary Capture of the overlay (film, heatmap, lung outline) marked "research use".

Both are new series in the source's study, with the source's patient and study identifiers. Their UIDs are
derived from the source instance and the model, so screening an instance again (a node restarted mid-batch)
makes the same objects, which a PACS stores once. The screening process keeps each screening beside the inbox
(``keep_screening``: its fields as JSON, its maps as arrays); the DICOM side makes the objects from it
(``node.maker``), so their Python work never holds up the network's inference.
"""

from __future__ import annotations

import datetime
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pneumoscan.explain.render import overlay
from pneumoscan.inference.screen import Screening
from pneumoscan.models.description import ModelDescription
from pneumoscan.node.inbox import replaced_write

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
                           ("TimeOfSecondaryCapture", "time"), ("PresentationCreationDate", "date"),
                           ("PresentationCreationTime", "time")):
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


def headline(screening: Screening) -> str:
    """The outcome, with the probability when scored: what the overlay's banner and the drawings say first."""
    return f"{outcome(screening)} p={screening.probability:.3f}" if screening.scored else outcome(screening)


def picture(screening: Screening) -> np.ndarray:
    """The overlay (film, heatmap, lung outline) with its banner: the outcome and "research use"."""
    return with_banner(overlay(screening.image, screening.heatmap, lungs=screening.lungs),
                       [headline(screening), RESEARCH_USE])


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

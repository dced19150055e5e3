"""What the DICOM node sends back into the study: a Structured Report of the screening (highdicom, TID 1500
measurement report) and a Secondary Capture of the overlay (film, heatmap, lung outline) marked "research use".

Both are new series in the source's study, with the source's patient and study identifiers. Their UIDs are
derived from the source instance and the model, so screening an instance again (a node restarted mid-batch)
makes the same objects, which a PACS stores once. The screening process keeps each screening beside the inbox
(``keep_screening``: its fields as JSON, its maps as arrays); the DICOM side makes the objects from it
(``make_results``), so their Python work never holds up the network's inference.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from pneumoscan.explain.render import overlay
from pneumoscan.inference.screen import Screening
from pneumoscan.models.description import ModelDescription
from pneumoscan.node.inbox import replaced_write

MAPS = ("heatmap", "image", "lungs")  # a screening's arrays, kept beside its fields

SCHEME = "99PNEUMOSCAN"  # private coding scheme for the model's own concepts (its classes, the outcome)
CHEST_X_RAY = Code("399208008", "SCT", "Plain chest X-ray")
RESEARCH_USE = "RESEARCH USE ONLY - NOT FOR DIAGNOSIS"
SR_SERIES, SC_SERIES = 9901, 9902


def result_uid(source_uid: str, kind: str, model: str) -> str:
    """A UID for the ``kind`` of result (sr/sc, and their series) of a source instance and model: the same
    every time the same model screens the same instance."""
    return generate_uid(entropy_srcs=[source_uid, kind, model])


def model_name(description: ModelDescription) -> str:
    return f"pneumoscan {description.arch} ({description.task})"


def structured_report(screening: Screening, source: Dataset, description: ModelDescription, version: str) -> Dataset:
    """The screening as a TID 1500 measurement report: the outcome, each class's probability, the label at the
    validated threshold, the flag and its warning or the refusal's reason, the model, and the source image."""
    import highdicom as hd

    model = model_name(description)
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
        content.append(hd.sr.TextContentItem(name=concept(name, meaning), value=text[:1024],
                                             relationship_type="CONTAINS"))
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=result_uid(model, "device", version), name="pneumoscan",
                                                       model_name=model)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device)),
        procedure_reported=CHEST_X_RAY, imaging_measurements=[group], title=codes.DCM.ImagingMeasurementReport)
    return hd.sr.Comprehensive3DSR(
        evidence=[source], content=report[0], series_instance_uid=result_uid(uid, "sr series", model),
        series_number=SR_SERIES, sop_instance_uid=result_uid(uid, "sr", model), instance_number=1,
        manufacturer="pneumoscan", is_complete=True, series_description=f"pneumoscan screening ({RESEARCH_USE})")


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
    return items


def overlay_capture(screening: Screening, source: Dataset, description: ModelDescription, overlay: np.ndarray,
                    version: str) -> Dataset:
    """A Secondary Capture of the overlay (RGB), "research use" written on the image itself."""
    import highdicom as hd

    model = model_name(description)
    uid = source.SOPInstanceUID
    title = f"{outcome(screening)} p={screening.probability:.3f}" if screening.scored else outcome(screening)
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=with_banner(overlay, [title, RESEARCH_USE]), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=result_uid(uid, "sc series", model),
        sop_instance_uid=result_uid(uid, "sc", model), series_number=SC_SERIES, instance_number=1,
        manufacturer="pneumoscan", patient_orientation=("L", "F"))
    capture.SeriesDescription = f"pneumoscan heatmap ({RESEARCH_USE})"
    capture.BurnedInAnnotation = "YES"
    capture.SoftwareVersions = version
    capture.ImageComments = f"{model}, {description.intended_use}"[:10240]
    return capture


def with_banner(rgb: np.ndarray, lines: list[str], scale: int = 2) -> np.ndarray:
    """The image enlarged ``scale`` times with ``lines`` of text on a black band above it."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.BILINEAR)
    band = 14 * len(lines) + 8
    canvas = Image.new("RGB", (image.width, image.height + band))
    canvas.paste(image, (0, band))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((6, 4 + 14 * i), line, fill=(255, 255, 0) if i else (255, 255, 255))
    return np.asarray(canvas)


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


def make_results(folder: Path, source: Dataset, description: ModelDescription, version: str) -> list[Path]:
    """The report (and, for a scored film, the overlay) of the screening kept in ``folder``, written there."""
    screening = kept_screening(folder)
    results = [write(structured_report(screening, source, description, version), folder / "sr.dcm")]
    if screening.scored and screening.heatmap is not None:
        picture = overlay(screening.image, screening.heatmap, lungs=screening.lungs)
        results.append(write(overlay_capture(screening, source, description, picture, version), folder / "sc.dcm"))
    return results


def write(dataset: Dataset, path: Path) -> Path:
    """A result object as a DICOM file (whole or absent, not synced: a result lost in a crash is made again
    before sending); returns its path."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    replaced_write(path, buffer.getvalue())
    return path

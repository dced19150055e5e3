"""DICOM objects for the DICOM node's tests and benchmark: films wrapped as DX with the tags a modality sends
(some compressed), and the hostile objects a PACS also forwards (a CT and an MR slice, a lateral, a report,
broken pixel data)."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

COMPRESSIONS = {"jpeg": JPEGBaseline8Bit, "jpeg2000": JPEG2000Lossless, "rle": RLELossless}


def base(sop_class: str, study: dict, *, modality: str) -> Dataset:
    """A dataset with file meta, patient and study identifiers and fresh series/instance UIDs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    now = datetime.datetime.now()
    ds.PatientID, ds.PatientName = study["patient_id"], study["patient_name"]
    ds.PatientBirthDate, ds.PatientSex = "20200101", "O"
    ds.StudyInstanceUID, ds.AccessionNumber, ds.StudyID = study["study_uid"], study["accession"], "1"
    ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ReferringPhysicianName, ds.StudyDescription = "", "XR CHEST"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), 1, 1
    ds.Modality, ds.Manufacturer, ds.InstitutionName = modality, "TestModality", "Test Hospital"
    return ds


def new_study(i: int) -> dict:
    return {"patient_id": f"PAT{i:05d}", "patient_name": f"Test^Patient{i}", "study_uid": generate_uid(),
            "accession": f"ACC{i:06d}"}


def with_pixels(ds: Dataset, gray: np.ndarray, bits: int = 8) -> Dataset:
    """Monochrome pixels (``gray`` in [0, 1])."""
    pixels = np.round(np.clip(gray, 0, 1) * (2 ** bits - 1)).astype(np.uint8 if bits == 8 else np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8 if bits == 8 else 16), bits, bits - 1, 0
    ds.PixelData = pixels.tobytes()
    return ds


def dx_film(gray: np.ndarray, study: dict, *, view: str = "PA", compression: str = "") -> Dataset:
    """A chest film as Digital X-Ray (for presentation), optionally compressed (jpeg, jpeg2000, rle)."""
    ds = with_pixels(base(DigitalXRayImageStorageForPresentation, study, modality="DX"), gray)
    ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CHEST", view, ["L", "F"]
    ds.ImageType, ds.PresentationIntentType = ["ORIGINAL", "PRIMARY"], "FOR PRESENTATION"
    ds.PixelSpacing, ds.ImagerPixelSpacing = [0.5, 0.5], [0.5, 0.5]
    if compression:
        ds.compress(COMPRESSIONS[compression])
    return ds


def ct_slice(study: dict) -> Dataset:
    ds = with_pixels(base(CTImageStorage, study, modality="CT"), np.random.default_rng(0).random((64, 64)), bits=12)
    ds.RescaleIntercept, ds.RescaleSlope, ds.ImageType = -1024, 1, ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
    return ds


def mr_slice(study: dict) -> Dataset:
    ds = with_pixels(base(MRImageStorage, study, modality="MR"), np.random.default_rng(1).random((64, 64)), bits=12)
    ds.ImageType, ds.ScanningSequence, ds.SequenceVariant = ["ORIGINAL", "PRIMARY"], "SE", "NONE"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.9, 0.9], 3.0
    return ds


def broken_film(gray: np.ndarray, study: dict) -> Dataset:
    """A DX whose pixel data is cut short (a transfer that lost its end)."""
    ds = dx_film(gray, study)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    return ds


def report(study: dict) -> Dataset:
    """A Basic Text SR from elsewhere (a radiologist's report): no image to screen."""
    from pydicom.uid import BasicTextSRStorage

    ds = base(BasicTextSRStorage, study, modality="SR")
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    ds.ContinuityOfContent = "SEPARATE"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "18748-4", "LN"
    concept.CodeMeaning = "Diagnostic Imaging Report"
    ds.ConceptNameCodeSequence = [concept]
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path

"""DICOM out: a Secondary Capture of the heatmap overlay that keeps the study's identifiers, for a PACS."""

from __future__ import annotations

import datetime
import io

import numpy as np

from pneumoscan import __version__

# identifiers copied from the source object, so the capture files into the same patient and study
KEPT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "StudyDate",
        "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyDescription")


def read_identifiers(data: bytes) -> dict:
    """The study identifiers of a DICOM file (pixel data not read)."""
    import pydicom

    source = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    return {key: source.get(key) for key in KEPT if source.get(key) not in (None, "")}


def new_secondary_capture():
    """An empty Secondary Capture dataset with its file meta (explicit VR little endian) and fresh UIDs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    return ds


def secondary_capture(overlay_rgb: np.ndarray, identifiers: dict, *, description: str) -> bytes:
    """An RGB Secondary Capture Image Storage object holding ``overlay_rgb`` (uint8, H x W x 3)."""
    from pydicom.uid import generate_uid

    ds = new_secondary_capture()
    for key, value in identifiers.items():
        setattr(ds, key, value)
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality, ds.ConversionType, ds.SeriesNumber, ds.InstanceNumber = "OT", "WSD", 999, 1
    ds.SeriesDescription = "pneumoscan Grad-CAM overlay"
    ds.ImageComments = description[:10240]
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Manufacturer, ds.SoftwareVersions = "pneumoscan", __version__
    ds.BurnedInAnnotation = "NO"
    height, width, _ = overlay_rgb.shape
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(overlay_rgb, dtype=np.uint8).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()

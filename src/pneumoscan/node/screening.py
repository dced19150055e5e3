"""The DICOM node's screening step: the waiting instances of the inbox, what arrived together screened as one
batch by the one screener (``inference.screen``), each screening kept beside the inbox (the DICOM side makes
its Structured Report and overlay), then its row marked screened. What must not be screened (a CT or MR
slice, a report, a pneumoscan result sent back to us) is recorded with the reason and kept; what the screener
refuses or cannot read (a lateral view, broken pixel data) gets a report that says why.
"""

from __future__ import annotations

import logging

import pydicom
from pydicom.dataset import Dataset

from pneumoscan.inference.screen import Screener, Screening
from pneumoscan.node.inbox import Inbox
from pneumoscan.node.results import PR_SERIES, SC_SERIES, SR_SERIES, keep_screening

log = logging.getLogger(__name__)

# the storage classes that hold a projection X-ray the screener may be given
XRAY_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",              # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",            # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",          # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.7": "SC",              # Secondary Capture Image Storage (a digitised film)
    "1.2.840.10008.5.1.4.1.1.7.4": "SC",            # Multi-frame True Color Secondary Capture
}


def skip_reason(row) -> str:
    """Why an instance is not for the screener ("" when it is), from what the inbox read of its header."""
    sop_class = row["sop_class_uid"]
    if sop_class not in XRAY_CLASSES:
        name = pydicom.uid.UID(sop_class).name if sop_class else "an object without a storage class"
        modality = f" (modality {row['modality']})" if row["modality"] else ""
        return f"{name}{modality} is not a projection X-ray: not screened"
    return ""


def own_result(source: Dataset | None) -> bool:
    """Whether an instance is one of pneumoscan's own results, come back (a PACS routing everything to us)."""
    return (source is not None and str(source.get("Manufacturer", "")) == "pneumoscan"
            and source.get("SeriesNumber") in (SR_SERIES, SC_SERIES, PR_SERIES))


def screen_waiting(inbox: Inbox, screener: Screener, *, batch_size: int = 16) -> int:
    """Screen (or skip) up to ``batch_size`` waiting instances; returns how many were handled."""
    rows = inbox.waiting(batch_size)
    to_screen = []
    for row in rows:
        reason = skip_reason(row)
        if reason:
            inbox.skip(row["sop_instance_uid"], reason)
            log.info("%s from %s: %s", row["sop_instance_uid"], row["calling_ae"] or "?", reason)
        else:
            to_screen.append(row)
    sources = {row["sop_instance_uid"]: read_header(inbox, row) for row in to_screen}
    for row in [r for r in to_screen if own_result(sources[r["sop_instance_uid"]])]:
        inbox.skip(row["sop_instance_uid"], "a pneumoscan result, not a film: not screened")
        to_screen.remove(row)
    paths = [str(inbox.root / row["path"]) for row in to_screen]
    screenings = screener.screen(paths, heatmaps=True, progress=False) if paths else []  # what arrived together
    for row, screening in zip(to_screen, screenings):
        record(inbox, row, sources[row["sop_instance_uid"]], screening)
    return len(rows)


def read_header(inbox: Inbox, row) -> Dataset | None:
    """The instance's header, or None where even that cannot be read (the screener then says why)."""
    try:
        return pydicom.dcmread(inbox.root / row["path"], stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - any damage to a received file is recorded, never raised
        return None


def record(inbox: Inbox, row, source: Dataset | None, screening: Screening) -> None:
    """Keep one screening (``results.keep_screening``) and mark its row screened; the DICOM side makes its report
    and overlay from it and sends them."""
    uid = row["sop_instance_uid"]
    if source is None:
        inbox.skip(uid, f"unreadable: {screening.reason or 'the DICOM header is unreadable'}")
        log.warning("%s: %s", uid, screening.reason or "the DICOM header is unreadable")
        return
    keep_screening(inbox.results_folder(uid), screening)
    inbox.screened(uid, label=screening.label, probability=screening.probability, flagged=screening.flagged,
                   warning=screening.warning, reason=screening.reason, results=[])
    if screening.scored:
        log.info("%s (patient %s, study %s): %s p=%.3f%s", uid, row["patient_id"], row["accession_number"] or "-",
                 screening.label, screening.probability, " FLAGGED: " + screening.warning if screening.flagged else "")
    else:
        log.info("%s (patient %s): %s: %s", uid, row["patient_id"], screening.status, screening.reason)

"""The DICOM node on the network (pynetdicom): the storage SCP that receives studies into the inbox and answers
C-ECHO, and the storage SCU that sends the results back to the PACS.

The SCP accepts every storage class in the usual transfer syntaxes (compressed ones included), so what it must
not screen is still kept and recorded rather than refused at the door; each instance is in the inbox (file
synced, row committed) before the sender is told success.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pneumoscan.node.inbox import Inbox, Received

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity: host, port and AE title (``HOST:PORT:AET``)."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> Peer:
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
            raise ValueError(f"--send-to {text!r}: give HOST:PORT:AET, e.g. localhost:4242:ORTHANC")
        return cls(parts[0], int(parts[1]), parts[2])

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def storage_scp(inbox: Inbox, ae_title: str, port: int, host: str = "0.0.0.0"):
    """Start the storage SCP in the background; returns pynetdicom's server (``shutdown()`` stops it)."""
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=ae_title)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.maximum_pdu_size = 0  # no limit: a film arrives in as few PDUs as the sender likes
    handlers = [(evt.EVT_C_STORE, on_store, [inbox]), (evt.EVT_C_ECHO, lambda event: SUCCESS)]
    server = ae.start_server((host, port), block=False, evt_handlers=handlers)
    log.info("DICOM node %s listening on %s:%d (C-STORE of any storage class, C-ECHO)", ae_title, host, port)
    return server


def on_store(event, inbox: Inbox) -> int:
    """Keep one received instance; success only once it is durable."""
    try:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        received = Received(
            sop_instance_uid=str(dataset.SOPInstanceUID), sop_class_uid=str(dataset.SOPClassUID),
            study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
            series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
            patient_id=str(dataset.get("PatientID", "")), patient_name=str(dataset.get("PatientName", "")),
            accession_number=str(dataset.get("AccessionNumber", "")), modality=str(dataset.get("Modality", "")),
            view_position=str(dataset.get("ViewPosition", "")), calling_ae=event.assoc.requestor.ae_title,
            transfer_syntax=str(event.file_meta.TransferSyntaxUID))
    except Exception as err:  # noqa: BLE001 - a dataset we cannot even identify is refused, the node goes on
        log.warning("refused an instance from %s: %s", event.assoc.requestor.ae_title, err)
        return CANNOT_UNDERSTAND
    try:
        new = inbox.receive(received, encoded_file(event))
    except OSError as err:
        log.error("could not keep %s: %s", received.sop_instance_uid, err)
        return OUT_OF_RESOURCES
    log.info("received %s %s (patient %s, accession %s) from %s%s", received.modality or "?",
             received.sop_instance_uid, received.patient_id, received.accession_number or "-", received.calling_ae,
             "" if new else " again (kept once)")
    return SUCCESS


def encoded_file(event) -> bytes:
    """The received instance as a DICOM file: preamble, file meta and the dataset as it came (no re-encoding)."""
    return event.encoded_dataset(include_meta=True)


def send(peer: Peer, files: list[Path], calling_ae: str) -> dict[Path, str]:
    """C-STORE ``files`` to ``peer`` over one association; returns each file's error ("" when stored)."""
    import pydicom
    from pynetdicom import AE

    datasets = {path: pydicom.dcmread(path) for path in files}
    ae = AE(ae_title=calling_ae)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets.values()}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        return {path: f"could not associate with {peer}" for path in files}
    errors = {}
    try:
        for path, dataset in datasets.items():
            status = assoc.send_c_store(dataset)
            code = getattr(status, "Status", None)
            errors[path] = "" if code == SUCCESS else f"{peer} answered status {code!r}"
    finally:
        assoc.release()
    return errors

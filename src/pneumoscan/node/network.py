"""The DICOM node on the network (pynetdicom): the storage SCP that receives studies into the inbox and answers
C-ECHO, and what sends the results back to the PACS (C-STORE, or STOW-RS to a DICOMweb peer: each peer kind
``store``s); ``dicom_side`` runs both in the node's second process.

The SCP accepts every storage class in the usual transfer syntaxes (compressed ones included), so what it must
not screen is still kept and recorded rather than refused at the door; each instance is in the inbox (file
synced, row committed) before the sender is told success.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from pneumoscan.node.inbox import Inbox, Received

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
# how long a result's C-STORE waits for the PACS's answer: pynetdicom now and then loses an answer to a race
# between its threads (pydicom/pynetdicom#875), and the association is then aborted and the rest sent again
ANSWER_SECONDS = 10


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

    def store(self, files: dict[Path, object], calling_ae: str) -> dict[Path, str]:
        """C-STORE ``files`` (path: its file meta information); each file's error ("" when stored)."""
        return c_store(self, files, calling_ae)


@dataclass(frozen=True)
class WebPeer:
    """A PACS's DICOMweb service (its STOW-RS root, e.g. ``http://pacs:8042/dicom-web``)."""

    url: str

    def __str__(self) -> str:
        return self.url

    def store(self, files: dict[Path, object], calling_ae: str) -> dict[Path, str]:
        """STOW-RS ``files``; each file's error ("" when stored). A DICOMweb request has no calling AE."""
        return stow(self, list(files))


def parse_peer(text: str) -> Peer | WebPeer:
    """``--send-to``: a DICOMweb URL (results by STOW-RS), else ``HOST:PORT:AET`` (results by C-STORE)."""
    if text.startswith(("http://", "https://")):
        return WebPeer(text.rstrip("/"))
    return Peer.parse(text)


def storage_scp(inbox: Inbox, ae_title: str, port: int, host: str = "0.0.0.0"):
    """Start the storage SCP in the background; returns pynetdicom's server (``shutdown()`` stops it)."""
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=ae_title)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.maximum_pdu_size = 0  # no limit: a film arrives in as few PDUs as the sender likes
    handlers = [(evt.EVT_C_STORE, on_store, [inbox]), (evt.EVT_C_ECHO, lambda event: SUCCESS),
                (evt.EVT_CONN_OPEN, lambda event: without_delay(event.assoc))]
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


def without_delay(assoc) -> None:
    """Send each PDU at once (TCP_NODELAY): a C-STORE and its response are written in pieces, and Nagle's
    algorithm waiting for the peer's delayed acknowledgement cost about 40 ms per instance."""
    connection = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if connection is not None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def c_store(peer: Peer, files: dict[Path, object], calling_ae: str) -> dict[Path, str]:
    """C-STORE ``files`` (path: its file meta information) to ``peer`` over one association (explicit VR little
    endian, as results are made; sent from their bytes where the DICOM side asked pynetdicom to); returns each
    file's error ("" when stored)."""
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.dimse_timeout = ANSWER_SECONDS
    for sop_class in sorted({str(meta.MediaStorageSOPClassUID) for meta in files.values()}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        return {path: f"could not associate with {peer}" for path in files}
    without_delay(assoc)
    errors = {}
    try:
        for message_id, path in enumerate(files, 1):
            if not assoc.is_established:
                errors[path] = f"the association with {peer} ended"
                continue
            try:
                status = assoc.send_c_store(path, msg_id=message_id)
            except (RuntimeError, ValueError, OSError, AttributeError) as err:
                errors[path] = f"{peer}: {err}"
                continue
            code = getattr(status, "Status", None)
            errors[path] = ("" if code == SUCCESS else f"{peer} answered status 0x{code:04X}" if code is not None
                            else f"no answer from {peer} within {ANSWER_SECONDS} s")
    finally:
        if assoc.is_established:
            assoc.release()
    return errors


def stow(peer: WebPeer, files: list[Path]) -> dict[Path, str]:
    """STOW-RS ``files`` to ``peer`` in one request (dicomweb-client); returns each file's error ("" when
    stored)."""
    import pydicom
    import requests
    from dicomweb_client.api import DICOMwebClient

    datasets = {path: pydicom.dcmread(path) for path in files}
    try:
        answer = DICOMwebClient(peer.url, timeout=ANSWER_SECONDS * 3).store_instances(list(datasets.values()))
    except (requests.RequestException, OSError, ValueError) as err:
        return {path: f"{peer}: {err}" for path in files}
    refused = {str(item.get("ReferencedSOPInstanceUID", "")): item.get("FailureReason", "?")
               for item in answer.get("FailedSOPSequence", [])}
    return {path: (f"{peer} refused it (failure reason {refused[str(ds.SOPInstanceUID)]})"
                   if str(ds.SOPInstanceUID) in refused else "") for path, ds in datasets.items()}


def dicom_side(settings, peer: Peer | WebPeer | None, description: dict, stop, ready) -> None:
    """The node's second process: receive into the inbox, make the results of what is screened and send them,
    until ``stop`` is set or the screening process is gone (a killed node leaves no listener behind)."""
    from pynetdicom import _config

    from pneumoscan import __version__
    from pneumoscan.models.description import ModelDescription
    from pneumoscan.node.maker import ResultMaker
    from pneumoscan.node.presentation import presentation_state

    _config.STORE_SEND_CHUNKED_DATASET = True  # a result is C-STOREd from its file's bytes, never decoded again
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the screening process, which stops us
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for chatty in ("pynetdicom", "highdicom"):  # every PDU, every attribute copied: the node logs each instance
        logging.getLogger(chatty).setLevel(logging.WARNING)
    maker = ResultMaker(ModelDescription.from_dict(description), __version__,
                        built_whole={"pr": presentation_state} if settings.gsps else None)
    maker.warm_up()
    parent = multiprocessing.parent_process()
    inbox = Inbox(settings.inbox)
    server = storage_scp(inbox, settings.ae_title, settings.port, settings.host)
    ready.set()
    try:
        while not stop.is_set() and (parent is None or parent.is_alive()):
            try:
                made = make_waiting_results(inbox, maker)
                sent, failed = send_screened(inbox, peer, settings.ae_title) if peer else (0, 0)
            except Exception:  # noqa: BLE001 - the DICOM side stays up; what failed is tried again
                log.exception("making or sending results failed; trying again in %.0f s", settings.retry_seconds)
                made, sent, failed = 0, 0, 1
            if failed and not sent:  # the PACS is down or refuses: wait; some went through: the rest at once
                stop.wait(settings.retry_seconds)
            elif not sent and not made:
                stop.wait(settings.idle_seconds)
        while parent is None or parent.is_alive():  # what the last batch screened
            if not make_waiting_results(inbox, maker) and not (peer and send_screened(inbox, peer,
                                                                                        settings.ae_title)[0]):
                break
    finally:
        server.shutdown()


def make_waiting_results(inbox: Inbox, maker, limit: int = 16) -> int:
    """Make the report and overlay (``maker.ResultMaker``) of screened instances that have none yet; returns how
    many were handled."""
    import pydicom

    rows = inbox.unmade(limit)
    for row in rows:
        uid, folder = row["sop_instance_uid"], inbox.results_folder(row["sop_instance_uid"])
        try:
            source = pydicom.dcmread(inbox.root / row["path"], stop_before_pixels=True)
            made = maker.make(folder, source)
        except (FileNotFoundError, ValueError, KeyError, OSError) as err:  # the kept screening was lost in a crash
            inbox.make_again(uid, f"its screening was lost ({err}); screened again")
            log.warning("%s: its kept screening was lost (a crash?); it is screened again", uid)
            continue
        except Exception as err:  # noqa: BLE001 - one instance's failure is recorded; the node goes on
            log.exception("%s: could not make its results", uid)
            inbox.give_up(uid, f"could not make its results: {type(err).__name__}: {err}")
            continue
        inbox.made(uid, [str(path.relative_to(inbox.root)) for path in made])
    return len(rows)


def file_meta(path: Path):
    """The file meta information of the DICOM file at ``path``, or None where it is missing, empty or cut."""
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
    except Exception:  # noqa: BLE001 - a missing, empty or cut file is all the same here
        return None
    return meta if "MediaStorageSOPClassUID" in meta and path.stat().st_size > 512 else None


def send_screened(inbox: Inbox, peer: Peer | WebPeer, calling_ae: str, limit: int = 64) -> tuple[int, int]:
    """Send the results of screened instances to ``peer``; returns (instances sent, instances that failed)."""
    rows = inbox.unsent(limit)
    if not rows:
        return 0, 0
    files = {row["sop_instance_uid"]: [inbox.root / name for name in row["results"].split("\n") if name]
             for row in rows}
    metas = {path: file_meta(path) for paths in files.values() for path in paths}
    for uid, paths in list(files.items()):
        if any(metas[path] is None for path in paths):
            inbox.make_again(uid, "its results were lost before reaching the disk; screened again")
            log.warning("%s: its results were lost (a crash?); it is screened again", uid)
            del files[uid]
    to_send = {path: metas[path] for paths in files.values() for path in paths}
    errors = peer.store(to_send, calling_ae) if to_send else {}
    delivered, failed = [], 0
    for uid, paths in files.items():
        problems = [errors[path] for path in paths if errors.get(path)]
        if problems:
            inbox.send_failed(uid, problems[0])
            failed += 1
        else:
            delivered.append(uid)
    inbox.sent(delivered)
    sent = len(delivered)
    if failed:
        log.warning("%d results not sent to %s (%s); trying again later", failed, peer, next(iter(
            e for e in errors.values() if e)))
    if sent:
        log.info("sent the results of %d instances to %s", sent, peer)
    return sent, failed

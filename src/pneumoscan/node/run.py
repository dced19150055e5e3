"""``pneumoscan dicom-node``: the storage SCP receiving into the inbox, a loop that screens what waits and a
thread that sends what is screened, until stopped. Started again on the same inbox it resumes: what was received and not
screened is screened, what was screened and not sent is sent.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from pneumoscan.node.inbox import Inbox
from pneumoscan.node.network import Peer, send, storage_scp
from pneumoscan.node.screening import screen_waiting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeSettings:
    """Where the node listens, where it sends, where it keeps what it receives."""

    model: str                       # a run folder, model.pt or exported model
    inbox: str = "dicom-inbox"       # the inbox folder (instances, results, inbox.sqlite)
    ae_title: str = "PNEUMOSCAN"
    port: int = 11112
    host: str = "0.0.0.0"
    send_to: str = ""                # HOST:PORT:AET of the PACS; "" = keep results in the inbox only
    batch_size: int = 16             # instances screened together (what arrived together)
    idle_seconds: float = 0.2        # pause when nothing waits
    retry_seconds: float = 30.0      # pause before sending again after the PACS could not be reached


def run_node(settings: NodeSettings, stop: threading.Event | None = None, *, ready: threading.Event | None = None):
    """Run the node until ``stop`` is set (or Ctrl-C)."""
    from pneumoscan.inference.screen import load

    stop = stop or threading.Event()
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its every PDU; the node logs each instance itself
    peer = Peer.parse(settings.send_to) if settings.send_to else None
    inbox = Inbox(settings.inbox)
    screener = load(settings.model)
    log.info("model: %s (%s); inbox %s: %s", screener.description.arch, screener.description.task,
             Path(settings.inbox).resolve(), inbox.counts() or "empty")
    server = storage_scp(inbox, settings.ae_title, settings.port, settings.host)
    sender = threading.Thread(target=send_loop, args=(settings, peer, stop), name="sender", daemon=True)
    if peer is not None:
        sender.start()  # results go out while the next films are screened
    if ready is not None:
        ready.set()
    try:
        while not stop.is_set():
            if not screen_waiting(inbox, screener, batch_size=settings.batch_size):
                stop.wait(settings.idle_seconds)
    finally:
        stop.set()
        server.shutdown()
        if sender.is_alive():
            sender.join(60)
        log.info("DICOM node stopped; inbox: %s", inbox.counts())


def send_loop(settings: NodeSettings, peer: Peer, stop: threading.Event) -> None:
    """Send what is screened until ``stop``; after a failure, wait ``retry_seconds`` before trying again."""
    inbox = Inbox(settings.inbox)
    while not stop.is_set():
        sent, failed = send_screened(inbox, peer, settings.ae_title)
        if failed:
            stop.wait(settings.retry_seconds)
        elif not sent:
            stop.wait(settings.idle_seconds)
    send_screened(inbox, peer, settings.ae_title)  # what the last batch screened


def readable_dicom(path: Path) -> bool:
    import pydicom

    try:
        pydicom.dcmread(path, stop_before_pixels=True)
        return True
    except Exception:  # noqa: BLE001 - a missing, empty or cut file is all the same here
        return False


def send_screened(inbox: Inbox, peer: Peer, calling_ae: str, limit: int = 64) -> tuple[int, int]:
    """Send the results of screened instances to ``peer``; returns (instances sent, instances that failed)."""
    rows = inbox.unsent(limit)
    if not rows:
        return 0, 0
    files = {row["sop_instance_uid"]: [inbox.root / name for name in row["results"].split("\n") if name]
             for row in rows}
    for uid, paths in list(files.items()):
        if not all(readable_dicom(path) for path in paths):
            inbox.make_again(uid, "its results were lost before reaching the disk; screened again")
            log.warning("%s: its results were lost (a crash?); it is screened again", uid)
            del files[uid]
    errors = send(peer, [path for paths in files.values() for path in paths], calling_ae) if files else {}
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

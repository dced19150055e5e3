"""``pneumoscan dicom-node``: the DICOM side (``network.dicom_side``: the storage SCP receiving into the inbox, the
making and sending of results) in a process of its own, and here a loop that screens what waits, until
stopped. Started again on the same inbox it resumes: what was received and not screened is screened, what was
screened and not sent is sent.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from dataclasses import dataclass
from pathlib import Path

from pneumoscan.node.inbox import Inbox
from pneumoscan.node.network import dicom_side, parse_peer
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
    send_to: str = ""                # HOST:PORT:AET of the PACS, or its DICOMweb URL; "" = keep results in the inbox
    batch_size: int = 16             # instances screened together (what arrived together)
    gsps: bool = False               # also a presentation state: lungs, heatmap contours, outcome as layers

    idle_seconds: float = 0.2        # pause when nothing waits
    retry_seconds: float = 10.0      # pause before sending again after the PACS could not be reached


def run_node(settings: NodeSettings, stop: threading.Event | None = None, *, ready: threading.Event | None = None):
    """Run the node until ``stop`` is set (or Ctrl-C)."""
    from pneumoscan.inference.screen import load

    stop = stop or threading.Event()
    peer = parse_peer(settings.send_to) if settings.send_to else None
    inbox = Inbox(settings.inbox)
    screener = load(settings.model)
    log.info("model: %s (%s); inbox %s: %s", screener.description.arch, screener.description.task,
             Path(settings.inbox).resolve(), inbox.counts() or "empty")
    context = multiprocessing.get_context("spawn")  # no torch threads forked; pynetdicom's polling threads
    network_stop, network_ready = context.Event(), context.Event()  # stay off this process's interpreter lock
    network = context.Process(target=dicom_side, args=(settings, peer, screener.description.to_dict(), network_stop,
                                                       network_ready),
                              name="pneumoscan-dicom", daemon=True)
    network.start()
    while not network_ready.wait(0.2):
        if not network.is_alive():
            raise OSError(f"the DICOM node could not listen on {settings.host}:{settings.port} (in use?)")
    if ready is not None:
        ready.set()
    try:
        while not stop.is_set():
            if not screen_waiting(inbox, screener, batch_size=settings.batch_size):
                stop.wait(settings.idle_seconds)
    finally:
        stop.set()
        network_stop.set()  # the DICOM side sends what is screened, then stops
        network.join(120)
        log.info("DICOM node stopped; inbox: %s", inbox.counts())
